//! Test harness: starts the real binary (`serve`, `api` or `worker`) on port 0 with a temporary
//! data folder, an upstream-sim on port 0, and offers a small OpenAI-API client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
pub use upstream_sim::{FaultRates, SimConfig, SimHandle};

pub const BIN: &str = env!("CARGO_BIN_EXE_vllm-batch");
pub const MODEL: &str = "sim-model";

/// Flags that make a test run quick: short polls, leases and backoffs.
pub const FAST: &[&str] = &[
    "--poll-interval",
    "50ms",
    "--lease",
    "2s",
    "--retry-backoff-base",
    "20ms",
    "--retry-backoff-max",
    "300ms",
    "--request-timeout",
    "3s",
    "--drain-timeout",
    "5s",
];

pub async fn sim(config: SimConfig) -> SimHandle {
    upstream_sim::spawn(config).await.expect("upstream-sim starts")
}

pub async fn default_sim() -> SimHandle {
    sim(SimConfig::default()).await
}

/// A running `vllm-batch` process with its captured log lines.
pub struct Proc {
    pub child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// `serve`/`api`: the API's base URL; `worker`: its metrics endpoint's base URL.
    pub base: Option<String>,
}

impl Proc {
    /// Starts `vllm-batch <cmd> <args>`; for `serve` and `api` waits for the listening line.
    pub fn start(cmd: &str, data_dir: &Path, args: &[&str]) -> Proc {
        Self::start_with_env(cmd, data_dir, args, &[])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with_env(cmd: &str, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(BIN);
        command.envs(env.iter().copied());
        command.arg(cmd).arg("--data-dir").arg(data_dir);
        if cmd == "worker" {
            command.args(["--metrics-port", "0"]);
        } else if cmd != "migrate" {
            command.args(["--port", "0"]);
        }
        command.args(args).env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["message"] == "vllm-batch API listening" || v["message"] == "worker metrics listening" {
                            let _ = tx.send(v["address"].as_str().unwrap().to_string());
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Some(addr),
            Err(_) => panic!("{cmd} did not start; logs:\n{}", logs.lock().unwrap().join("\n")),
        };
        Proc { child, logs, base }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn client(&self) -> Client {
        Client::new(self.base.clone().expect("process serves HTTP"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vllm-batch serve` with its own data folder, pointed at `sim`.
pub struct App {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

impl App {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

pub fn serve(sim: &SimHandle, extra: &[&str]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let upstream = sim.base_url();
    let mut args: Vec<&str> = vec!["--upstream", &upstream];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    let proc = Proc::start("serve", dir.path(), &args);
    let client = proc.client();
    App { proc, dir, client }
}

/// A minimal client of the OpenAI Files and Batches API.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

/// Status code and JSON body of a response.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Client {
    pub fn new(base: String) -> Self {
        Client { base, http: reqwest::Client::new() }
    }

    /// A client that sends `Authorization: Bearer <key>` on every request.
    pub fn with_key(base: String, key: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        Client { base, http: reqwest::Client::builder().default_headers(headers).build().unwrap() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body, headers }
    }

    pub async fn get(&self, path: &str) -> Answer {
        Self::answer(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        Self::answer(self.http.post(self.url(path)).json(&body).send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        Self::answer(self.http.delete(self.url(path)).send().await.unwrap()).await
    }

    pub async fn upload_raw(&self, content: Vec<u8>, filename: &str, purpose: Option<&str>) -> Answer {
        let mut form = reqwest::multipart::Form::new();
        if let Some(p) = purpose {
            form = form.text("purpose", p.to_string());
        }
        form = form.part("file", reqwest::multipart::Part::bytes(content).file_name(filename.to_string()));
        Self::answer(self.http.post(self.url("/v1/files")).multipart(form).send().await.unwrap()).await
    }

    /// Uploads a batch input file and returns its id.
    pub async fn upload(&self, content: &str) -> String {
        let a = self.upload_raw(content.as_bytes().to_vec(), "input.jsonl", Some("batch")).await;
        assert_eq!(a.status, 200, "upload: {}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }

    pub async fn create_batch(&self, file_id: &str, endpoint: &str, window: &str) -> Value {
        let a = self
            .post("/v1/batches", json!({"input_file_id": file_id, "endpoint": endpoint, "completion_window": window}))
            .await;
        assert_eq!(a.status, 200, "create batch: {}", a.body);
        a.body
    }

    /// Uploads `content` and creates a chat batch over it.
    pub async fn submit(&self, content: &str) -> String {
        let file = self.upload(content).await;
        self.create_batch(&file, "/v1/chat/completions", "24h").await["id"].as_str().unwrap().to_string()
    }

    pub async fn batch(&self, id: &str) -> Value {
        let a = self.get(&format!("/v1/batches/{id}")).await;
        assert_eq!(a.status, 200, "get batch: {}", a.body);
        a.body
    }

    /// Polls the batch until `done` holds, failing after `within`.
    pub async fn wait_until(&self, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let b = self.batch(id).await;
            if done(&b) {
                return b;
            }
            assert!(Instant::now() < deadline, "batch never reached the expected state; last: {b:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_terminal(&self, id: &str, within: Duration) -> Value {
        self.wait_until(id, within, |b| {
            matches!(b["status"].as_str(), Some("completed" | "failed" | "expired" | "cancelled"))
        })
        .await
    }

    pub async fn content(&self, file_id: &str) -> String {
        let resp = self.http.get(self.url(&format!("/v1/files/{file_id}/content"))).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.unwrap()
    }

    /// Output and error lines of a finished batch, parsed.
    pub async fn results(&self, batch: &Value) -> (Vec<Value>, Vec<Value>) {
        let mut files = Vec::new();
        for key in ["output_file_id", "error_file_id"] {
            let lines = match batch[key].as_str() {
                Some(id) => self.content(id).await.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
                None => Vec::new(),
            };
            files.push(lines);
        }
        let err = files.pop().unwrap();
        (files.pop().unwrap(), err)
    }
}

/// A chat batch file of `n` requests `req-0…`, each asking the sim to echo `prompt <i>`.
pub fn chat_lines(n: usize) -> String {
    chat_lines_with(n, |_| String::new())
}

/// Like `chat_lines`, with `extra(i)` appended to request i's prompt (for sim markers).
pub fn chat_lines_with(n: usize, extra: impl Fn(usize) -> String) -> String {
    let mut s = String::new();
    for i in 0..n {
        let line = json!({
            "custom_id": format!("req-{i}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": format!("prompt {i}{}", extra(i))}], "max_tokens": 5 + (i % 7)}
        });
        s.push_str(&line.to_string());
        s.push('\n');
    }
    s
}

/// Checks the invariant of a finished batch: every `custom_id` of `0..n` appears exactly once
/// across the two files; each output body is the sim's echo of its own request; the counts
/// and usage agree with the files. Returns the error lines' codes, counted.
pub fn check_exactly_once(batch: &Value, out: &[Value], err: &[Value], n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in out.iter().chain(err) {
        let id = line["custom_id"].as_str().unwrap().to_string();
        *seen.entry(id).or_insert(0) += 1;
        assert!(line["id"].as_str().unwrap().starts_with("batch_req_"), "{line}");
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, &c)| c > 1).collect();
    assert!(dupes.is_empty(), "custom_ids written more than once: {dupes:?}");
    for i in 0..n {
        assert!(seen.contains_key(&format!("req-{i}")), "req-{i} missing from both files");
    }
    assert_eq!(seen.len(), n, "unexpected custom_ids");
    let mut usage_in = 0;
    let mut usage_out = 0;
    for line in out {
        let i: usize = line["custom_id"].as_str().unwrap()["req-".len()..].parse().unwrap();
        assert_eq!(line["response"]["status_code"], 200);
        assert!(line["error"].is_null());
        let content = line["response"]["body"]["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.starts_with(&format!("echo: prompt {i}")), "body of req-{i} is {content:?}");
        assert_eq!(line["response"]["body"]["usage"]["completion_tokens"], 5 + (i % 7) as i64);
        usage_in += line["response"]["body"]["usage"]["prompt_tokens"].as_i64().unwrap();
        usage_out += line["response"]["body"]["usage"]["completion_tokens"].as_i64().unwrap();
    }
    let counts = &batch["request_counts"];
    assert_eq!(counts["total"], n as i64, "{batch}");
    assert_eq!(counts["completed"], out.len() as i64, "{batch}");
    assert_eq!(counts["failed"], err.len() as i64, "{batch}");
    assert_eq!(batch["usage"]["input_tokens"], usage_in, "{batch}");
    assert_eq!(batch["usage"]["output_tokens"], usage_out, "{batch}");
    assert_eq!(batch["usage"]["total_tokens"], usage_in + usage_out, "{batch}");
    let mut codes = HashMap::new();
    for line in err {
        *codes.entry(line["error"]["code"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    codes
}

/// Asserts OpenAI's error envelope and returns the error object.
pub fn error_of(a: &Answer, status: u16) -> Value {
    assert_eq!(a.status, status, "{}", a.body);
    let e = &a.body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", a.body);
    assert!(e["type"].is_string(), "{}", a.body);
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{}", a.body);
    e.clone()
}

pub const MINUTE: Duration = Duration::from_secs(60);
