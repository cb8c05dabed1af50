//! The monitoring stack against the real thing: a real `prometheus` scrapes a real API, a real
//! standalone worker and the simulated vLLM with the repository's own configuration (targets
//! rewritten to the test's ports), a batch with injected faults runs, and then every PromQL
//! expression of every dashboard panel and every recording rule is evaluated through
//! Prometheus's HTTP API. Promtail's pipeline is checked against log lines the binary wrote.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::prometheus::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_recording_rule_returns_data_from_real_prometheus() {
    let faults = FaultRates { error_500: 0.05, error_429: 0.05, ..FaultRates::default() };
    let sim = sim(SimConfig { faults, max_num_seqs: 32, base_latency_ms: 5, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = sim.base_url();
    let logs = dir.path().join("logs");
    let env = [("LOG_DIR", logs.to_str().unwrap())];
    migrate(dir.path(), &[]);
    let api = Proc::start_with_env("api", dir.path(), &["--upstream", upstream.as_str()], &env);
    let mut args = vec!["--upstream", upstream.as_str(), "--chunk-size", "100", "--max-retries", "8"];
    args.extend_from_slice(FAST);
    let worker = Proc::start_with_env("worker", dir.path(), &args, &env);
    let strip = |u: &str| u.trim_start_matches("http://").to_string();
    let sim_addr = strip(upstream.trim_end_matches("/v1"));
    let prom_dir = dir.path().join("prom");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let mut targets = HashMap::new();
    targets.insert("vllm-batch-api", strip(&api.client().base));
    targets.insert("vllm-batch-worker", strip(worker.base.as_deref().unwrap()));
    targets.insert("vllm", sim_addr);
    let port = free_port();
    targets.insert("prometheus", format!("127.0.0.1:{port}"));
    let config = rewrite_config(&prom_dir, &targets);
    let check = Command::new(require_tool("promtool")).arg("check").arg("config").arg(&config).output().unwrap();
    assert!(check.status.success(), "rewritten config invalid: {}", String::from_utf8_lossy(&check.stdout));
    let prom = start_prometheus(&prom_dir, &config, port);

    let c = api.client();
    // Final 400s, requests that fail for good (an error the worker logs), and transient faults.
    let content = chat_lines_with(1000, |i| match i % 97 {
        3 => " __sim_400__".into(),
        5 => " __sim_500__".into(),
        _ => String::new(),
    });
    let id = c.submit(&content).await;
    c.get("/v1/batches/batch_0123456789abcdef0123456789abcdef").await;
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");

    let allowed = expected_empty();
    let exprs: Vec<(String, String)> = expressions().into_iter().filter(|(_, e)| !allowed.contains_key(e)).collect();
    let mut problems = without_data(&prom.url, &exprs, &id, Duration::from_secs(60)).await;
    // Expressions allowed to be empty must still be valid PromQL.
    for (where_, expr) in expressions().iter().filter(|(_, e)| allowed.contains_key(e)) {
        if let Err(e) = query(&prom.url, &substitute(expr, &id)).await {
            problems.push(format!("{where_}: `{expr}` failed: {e}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let up = query(&prom.url, "up{job=~\"vllm-batch-api|vllm-batch-worker|vllm\"} == 1").await.unwrap();
    assert_eq!(up.len(), 3, "every scraped peer is up: {up:?}");
    drop(worker);
    drop(api);

    // Promtail: its JSON stage extracts keys that the binary's log lines really carry.
    let promtail = yaml(&repo().join("monitoring/promtail/promtail-config.yml"));
    let mut json_keys = Vec::new();
    let mut label_keys = Vec::new();
    for sc in promtail["scrape_configs"].as_sequence().unwrap() {
        for stage in sc["pipeline_stages"].as_sequence().unwrap() {
            if let Some(exprs) = stage["json"]["expressions"].as_mapping() {
                for (name, source) in exprs {
                    let source = source.as_str().filter(|s| !s.is_empty()).or(name.as_str()).unwrap();
                    json_keys.push(source.to_string());
                }
            }
            if let Some(labels) = stage["labels"].as_mapping() {
                label_keys.extend(labels.keys().map(|k| k.as_str().unwrap().to_string()));
            }
        }
    }
    let mut lines: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).expect("log lines are JSON")));
    }
    for key in &json_keys {
        assert!(lines.iter().any(|l| l.get(key).is_some()), "promtail extracts `{key}`, which no log line carries");
    }
    for key in ["timestamp", "level", "message", "batch_id", "request_id"] {
        assert!(json_keys.iter().any(|k| k == key), "promtail does not extract `{key}`");
    }
    for label in &label_keys {
        assert!(["level", "service", "job"].contains(&label.as_str()), "high-cardinality label `{label}`");
    }
}
