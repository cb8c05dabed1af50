//! The monitoring stack against the real thing: a real `prometheus` scrapes a real API, a real
//! standalone worker and the simulated vLLM with the repository's own configuration (targets
//! rewritten to the test's ports), a batch with injected faults runs, and then every PromQL
//! expression of every dashboard panel and every recording rule is evaluated through
//! Prometheus's HTTP API. Promtail's pipeline is checked against log lines the binary wrote.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_norway::Value as Yaml;

use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn yaml(path: &Path) -> Yaml {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn require_tool(name: &str) -> PathBuf {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    assert!(out.status.success(), "`{name}` is not installed; tests/run.sh installs it (Debian package)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's `prometheus.yml` with 1 s intervals, absolute rule paths, no Alertmanager,
/// and every job's targets replaced by `targets[job]` (a closed port for jobs with no peer here).
fn rewrite_config(dir: &Path, targets: &HashMap<&str, String>) -> PathBuf {
    let root = repo();
    let mut cfg = yaml(&root.join("monitoring/prometheus/prometheus.yml"));
    cfg["global"]["scrape_interval"] = "1s".into();
    cfg["global"]["evaluation_interval"] = "1s".into();
    let rules = root.join("monitoring/prometheus/rules/*.yml").display().to_string();
    cfg["rule_files"] = Yaml::Sequence(vec![rules.into()]);
    if let Some(map) = cfg.as_mapping_mut() {
        map.remove("alerting");
    }
    let token = dir.join("vllm_token");
    std::fs::write(&token, "test-token").unwrap();
    for job in cfg["scrape_configs"].as_sequence_mut().expect("scrape_configs") {
        let name = job["job_name"].as_str().unwrap().to_string();
        let target = targets.get(name.as_str()).cloned().unwrap_or_else(|| "127.0.0.1:1".into());
        let map = job.as_mapping_mut().unwrap();
        map.remove("file_sd_configs");
        map.insert("static_configs".into(), serde_norway::from_str(&format!("[{{targets: ['{target}']}}]")).unwrap());
        if let Some(auth) = map.get_mut("authorization") {
            auth["credentials_file"] = token.display().to_string().into();
        }
        map.remove("scheme");
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, serde_norway::to_string(&cfg).unwrap()).unwrap();
    path
}

fn start_prometheus(dir: &Path, config: &Path, port: u16) -> Prometheus {
    let bin = require_tool("prometheus");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    Prometheus { child, url: format!("http://127.0.0.1:{port}") }
}

async fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let resp = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Grafana's variables as the test fills them in.
fn substitute(expr: &str, batch_id: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("${job}", ".*")
        .replace("$job", ".*")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("${model}", ".*")
        .replace("$model", ".*")
        .replace("$batch_id", batch_id)
}

/// (where, expression) of every dashboard panel target (from the dashboard checker) and every
/// recording rule, plus each recorded series by name.
fn expressions() -> Vec<(String, String)> {
    let root = repo();
    let out = Command::new("python3")
        .arg(root.join("monitoring/grafana/check_dashboards.py"))
        .arg("--list-exprs")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "check_dashboards.py --list-exprs failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut all = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let expr = v["expr"].as_str().unwrap().to_string();
        all.push((format!("dashboard {} / panel {}", v["dashboard"], v["panel"]), expr));
    }
    assert!(all.len() >= 30, "dashboards hold only {} expressions", all.len());
    for entry in std::fs::read_dir(root.join("monitoring/prometheus/rules")).unwrap() {
        let path = entry.unwrap().path();
        for group in yaml(&path)["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                if let Some(record) = rule["record"].as_str() {
                    all.push((format!("recording rule {record}"), rule["expr"].as_str().unwrap().to_string()));
                    all.push((format!("recorded series {record}"), record.to_string()));
                }
            }
        }
    }
    all
}

fn expected_empty() -> BTreeMap<String, String> {
    let path = repo().join("monitoring/grafana/expected-empty.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

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
    let exprs = expressions();
    let mut pending: Vec<(String, String)> =
        exprs.iter().filter(|(_, e)| !allowed.contains_key(e)).map(|(w, e)| (w.clone(), substitute(e, &id))).collect();
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (where_, expr) in pending {
            match query(&prom.url, &expr).await {
                Err(e) => errors.push(format!("{where_}: `{expr}` failed: {e}")),
                Ok(r) if r.is_empty() => still.push((where_, expr)),
                Ok(_) => {}
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    // Expressions allowed to be empty must still be valid PromQL.
    for (where_, expr) in exprs.iter().filter(|(_, e)| allowed.contains_key(e)) {
        if let Err(e) = query(&prom.url, &substitute(expr, &id)).await {
            errors.push(format!("{where_}: `{expr}` failed: {e}"));
        }
    }
    let empty: Vec<String> = pending.iter().map(|(w, e)| format!("{w}: `{e}` returned no series")).collect();
    assert!(errors.is_empty() && empty.is_empty(), "{}\n{}", errors.join("\n"), empty.join("\n"));
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
