//! A real `prometheus` (Debian's package) for the tests: the repository's own configuration with
//! every job's targets rewritten to the test's ports, queries through its HTTP API, and the list
//! of every dashboard panel expression and recording rule to evaluate there. Used by the
//! monitoring test (upstream-sim) and the real-vLLM tests (tests/vllm).

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_norway::Value as Yaml;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn yaml(path: &Path) -> Yaml {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

pub fn require_tool(name: &str) -> PathBuf {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    assert!(out.status.success(), "`{name}` is not installed; tests/run.sh installs it (Debian package)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub struct Prometheus {
    child: Child,
    pub url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's `prometheus.yml` with 1 s intervals, absolute rule paths, no Alertmanager,
/// and every job's targets replaced by `targets[job]` (a closed port for jobs with no peer here).
pub fn rewrite_config(dir: &Path, targets: &HashMap<&str, String>) -> PathBuf {
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

pub fn start_prometheus(dir: &Path, config: &Path, port: u16) -> Prometheus {
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

pub async fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
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
pub fn substitute(expr: &str, batch_id: &str) -> String {
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

/// One PromQL expression of a dashboard panel's target.
pub struct PanelExpr {
    /// The dashboard's uid.
    pub dashboard: String,
    /// The panel's title.
    pub panel: String,
    pub expr: String,
}

/// Every dashboard panel target's expression, as the dashboard checker lists them.
pub fn panel_expressions() -> Vec<PanelExpr> {
    let root = repo();
    let out = Command::new("python3")
        .arg(root.join("monitoring/grafana/check_dashboards.py"))
        .arg("--list-exprs")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "check_dashboards.py --list-exprs failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |v: &Value, k: &str| v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}")).to_string();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            PanelExpr { dashboard: field(&v, "dashboard"), panel: field(&v, "panel"), expr: field(&v, "expr") }
        })
        .collect()
}

/// (where, expression) of every dashboard panel target and every recording rule, plus each
/// recorded series by name.
pub fn expressions() -> Vec<(String, String)> {
    let root = repo();
    let mut all: Vec<(String, String)> = panel_expressions()
        .into_iter()
        .map(|p| (format!("dashboard {:?} / panel {:?}", p.dashboard, p.panel), p.expr))
        .collect();
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

pub fn expected_empty() -> BTreeMap<String, String> {
    let path = repo().join("monitoring/grafana/expected-empty.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Evaluates each (where, expression) (Grafana variables filled in for `batch_id`) until every one
/// returns a series or `within` has passed; returns one line for each that failed or stayed empty.
pub async fn without_data(prom: &str, exprs: &[(String, String)], batch_id: &str, within: Duration) -> Vec<String> {
    let mut pending: Vec<(String, String)> = exprs.iter().map(|(w, e)| (w.clone(), substitute(e, batch_id))).collect();
    let mut problems = Vec::new();
    let deadline = Instant::now() + within;
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (where_, expr) in pending {
            match query(prom, &expr).await {
                Err(e) => problems.push(format!("{where_}: `{expr}` failed: {e}")),
                Ok(r) if r.is_empty() => still.push((where_, expr)),
                Ok(_) => {}
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    problems.extend(pending.iter().map(|(w, e)| format!("{w}: `{e}` returned no series")));
    problems
}
