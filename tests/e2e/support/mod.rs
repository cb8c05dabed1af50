//! Test harness: starts the real binary (`serve`, `api` or `worker`) on port 0 with a temporary
//! data folder, an upstream-sim on port 0, and offers a small OpenAI-API client.

#![allow(dead_code)]

pub mod prometheus;

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

/// Whether the suite runs on PostgreSQL (`VLLM_BATCH_TEST_BACKEND=postgres`) instead of the
/// embedded SQLite default. Each data folder then gets a database of its own.
pub fn on_postgres() -> bool {
    match std::env::var("VLLM_BATCH_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("VLLM_BATCH_TEST_BACKEND={other:?}: use sqlite or postgres"),
    }
}

/// The test PostgreSQL's base URL (`tests/pg/start.sh` prints it into `VLLM_BATCH_TEST_PG`).
/// `None` lets a developer without PostgreSQL skip; under `CI=true` it fails the test instead.
pub fn pg_base() -> Option<String> {
    match std::env::var("VLLM_BATCH_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_string()),
        _ if std::env::var("CI").as_deref() == Ok("true") || on_postgres() => {
            panic!("VLLM_BATCH_TEST_PG is not set: run `export VLLM_BATCH_TEST_PG=$(tests/pg/start.sh)` (tests/run.sh does)")
        }
        _ => {
            eprintln!("skipped: VLLM_BATCH_TEST_PG is not set (tests/run.sh starts PostgreSQL and sets it)");
            None
        }
    }
}

/// A new, empty database on the test PostgreSQL; returns its URL.
pub fn fresh_pg_database(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("vbt_{}_{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    psql(&format!("{base}/postgres"), &format!("CREATE DATABASE {name}"));
    format!("{base}/{name}")
}

/// Runs one SQL command with `psql` (Debian's postgresql-client) and returns its output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// On PostgreSQL, points `command` at the database of `data_dir` (made on first use), so that
/// every process a test starts on one data folder shares one database, as on SQLite.
pub fn use_test_database(command: &mut Command, data_dir: &Path) {
    if let Some(url) = test_database_url(data_dir) {
        command.env("DATABASE_URL", url);
    }
}

/// On PostgreSQL, the URL of the database of `data_dir` (made on first use); `None` on SQLite,
/// where the database is the file in the data folder.
pub fn test_database_url(data_dir: &Path) -> Option<String> {
    static DATABASES: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
    if !on_postgres() {
        return None;
    }
    let base = pg_base().expect("PostgreSQL backend");
    let mut map = DATABASES.lock().unwrap();
    let databases = map.get_or_insert_with(HashMap::new);
    Some(databases.entry(data_dir.to_path_buf()).or_insert_with(|| fresh_pg_database(&base)).clone())
}

/// `vllm-batch migrate` on the data folder's database (what an operator runs before starting
/// `api` and `worker` processes).
pub fn migrate(data_dir: &Path, env: &[(&str, &str)]) {
    let mut command = Command::new(BIN);
    if !env.iter().any(|(k, _)| *k == "DATABASE_URL") {
        use_test_database(&mut command, data_dir);
    }
    let out = command.envs(env.iter().copied()).arg("migrate").arg("--data-dir").arg(data_dir).output().unwrap();
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
}

/// The test venv's Python: `VLLM_BATCH_TEST_PYTHON` (set by `tests/run.sh`) or the repository's
/// `.venv-test`, which `tests/run.sh` makes with `tests/sdk/requirements.txt`. Not checked here.
pub fn test_python() -> PathBuf {
    match std::env::var_os("VLLM_BATCH_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python"),
    }
}

/// The Python interpreter that has the `openai` package, or a panic that says how to get one.
pub async fn sdk_python() -> PathBuf {
    let python = test_python();
    let hint = "run `tests/run.sh` (it creates .venv-test with tests/sdk/requirements.txt), \
                or set VLLM_BATCH_TEST_PYTHON to a python that has the `openai` package";
    assert!(python.exists(), "no Python for the SDK test at {}; {hint}", python.display());
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "import openai; print(openai.__version__)"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} does not run: {e}; {hint}", python.display()));
    assert!(
        probe.status.success(),
        "{} cannot import openai: {}; {hint}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

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
        if !env.iter().any(|(k, _)| *k == "DATABASE_URL") && !args.contains(&"--database-url") {
            use_test_database(&mut command, data_dir);
        }
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

    /// Requests this worker wrote to output files, from its own /metrics.
    pub async fn completed_requests(&self) -> f64 {
        let url = format!("{}/metrics", self.base.as_ref().expect("worker serves its metrics"));
        let page = reqwest::get(url).await.unwrap().text().await.unwrap();
        sample(&page, "vllm_batch_requests_processed_total{status=\"completed\"}").unwrap_or(0.0)
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

    pub async fn answer(resp: reqwest::Response) -> Answer {
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
    chat_lines_for(MODEL, n, extra)
}

/// Like `chat_lines_with`, for `model`.
pub fn chat_lines_for(model: &str, n: usize, extra: impl Fn(usize) -> String) -> String {
    let mut s = String::new();
    for i in 0..n {
        let line = json!({
            "custom_id": format!("req-{i}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": format!("prompt {i}{}", extra(i))}], "max_tokens": 5 + (i % 7)}
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

/// A private PostgreSQL server (initdb in a temporary folder, its own port, trust auth on
/// loopback), for tests that stop and start the database under running processes.
pub struct PgServer {
    root: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (tests/pg/start.sh installs it)")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql");
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // PostgreSQL refuses to run as root: as root, the server runs as the postgres user.
        if Self::as_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            assert!(Command::new("chown").arg("postgres:postgres").arg(&data).status().unwrap().success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = PgServer { root, bin, port };
        let out = server
            .pg(&server.bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        server.up();
        server
    }

    fn as_root() -> bool {
        Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
    }

    fn pg(&self, program: &Path) -> Command {
        if Self::as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.root.path().join("data");
        let out = self.pg(&self.bin.join("pg_ctl")).arg("-D").arg(&data).args(args).output().unwrap();
        assert!(out.status.success(), "pg_ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let data = self.root.path().join("data");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, data.display());
        let log = data.join("server.log");
        self.ctl(&["-w", "-l", log.to_str().unwrap(), "-o", &opts, "start"]);
    }

    /// Stops the server (fast shutdown: sessions are cut, as in a crash of the network path).
    pub fn down(&self) {
        self.ctl(&["-w", "-m", "fast", "stop"]);
    }

    /// The base URL (no database name).
    pub fn base(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.root.path().join("data");
        let _ = self.pg(&self.bin.join("pg_ctl")).arg("-D").arg(&data).args(["-m", "immediate", "stop"]).output();
    }
}

/// The value of one sample (`name{labels}` exactly as exposed) on a Prometheus text page.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
