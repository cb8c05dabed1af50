//! The client commands (`submit`, `batches`, `files`) as a user runs them: the real binary
//! against the real server, configured through `OPENAI_BASE_URL`. Scripted runs check the JSON,
//! the downloaded files and the exit codes; runs under tmux (a real pseudo-terminal) check the
//! live progress bar and the Ctrl-C prompt, and save the screen to `tests/out/cli-progress.txt`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Command;

use crate::support::*;

/// `vllm-batch ARGS` pointed at `app`, with stdin, stdout and stderr not terminals.
fn command(app: &App, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("OPENAI_BASE_URL", format!("{}/v1", app.client.base))
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs `vllm-batch ARGS` to its end.
async fn cli(app: &App, args: &[&str]) -> Output {
    tokio::time::timeout(2 * MINUTE, command(app, args).output())
        .await
        .unwrap_or_else(|_| panic!("vllm-batch {args:?} did not finish"))
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and parses stdout as one JSON value.
fn json_of(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

fn jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_json_uploads_follows_and_downloads() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    std::fs::write(&input, chat_lines(300)).unwrap();
    let (out, err) = (dir.path().join("out.jsonl"), dir.path().join("err.jsonl"));

    let o = cli(
        &app,
        &[
            "submit",
            path_str(&input),
            "--endpoint",
            "/v1/chat/completions",
            "--wait",
            "--json",
            "--output",
            path_str(&out),
            "--errors",
            path_str(&err),
            "--metadata",
            "job=cli-e2e",
            "--poll-interval",
            "200ms",
        ],
    )
    .await;
    let batch = json_of(&o);
    assert_eq!(batch["object"], "batch", "{batch}");
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["metadata"]["job"], "cli-e2e");
    assert!(batch["error_file_id"].is_null(), "{batch}");
    assert_eq!(batch, app.client.batch(batch["id"].as_str().unwrap()).await, "stdout is the final Batch object");
    let out_lines = jsonl(&out);
    assert_eq!(out_lines.len(), 300);
    check_exactly_once(&batch, &out_lines, &[], 300);
    assert!(!err.exists(), "no error file without errors");
    assert!(!dir.path().join("out.jsonl.part").exists());

    // Some requests fail: the error file exists, with exactly those; default paths beside the input.
    let bad = |i: usize| i % 50 == 7;
    std::fs::write(&input, chat_lines_with(300, |i| if bad(i) { " __sim_400__".into() } else { String::new() }))
        .unwrap();
    let o = cli(&app, &["submit", path_str(&input), "--endpoint", "/v1/chat/completions", "--wait", "--json"]).await;
    let batch = json_of(&o);
    assert_eq!(batch["status"], "completed", "{batch}");
    let out_lines = jsonl(&dir.path().join("requests.output.jsonl"));
    let err_lines = jsonl(&dir.path().join("requests.errors.jsonl"));
    let codes = check_exactly_once(&batch, &out_lines, &err_lines, 300);
    assert_eq!(codes.get("invalid_request"), Some(&6), "{codes:?}");
    let mut failed: Vec<String> = err_lines.iter().map(|l| l["custom_id"].as_str().unwrap().to_string()).collect();
    failed.sort();
    let mut expected: Vec<String> = (0..300).filter(|i| bad(*i)).map(|i| format!("req-{i}")).collect();
    expected.sort();
    assert_eq!(failed, expected);

    // Human output when stdout is not a terminal: only the result lines, no bars.
    let o = cli(&app, &["submit", path_str(&input), "--endpoint", "/v1/chat/completions", "--wait"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.lines().next().unwrap().contains(" completed"), "{text}");
    assert!(text.contains("300 requests, 294 ok, 6 failed"), "{text}");
    assert!(text.contains("requests.errors.jsonl"), "{text}");
    assert!(stderr(&o).is_empty(), "nothing but errors on stderr when it is not a terminal: {}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_without_wait_and_invalid_input() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    std::fs::write(&input, chat_lines(5)).unwrap();

    // Human: just the id, for `ID=$(vllm-batch submit …)`.
    let o = cli(&app, &["submit", path_str(&input), "--endpoint", "/v1/chat/completions"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(id.starts_with("batch_"), "{id}");
    app.client.wait_terminal(&id, MINUTE).await;

    // --json: the created Batch object.
    let o = cli(&app, &["submit", path_str(&input), "--endpoint", "/v1/chat/completions", "--json"]).await;
    let created = json_of(&o);
    assert_eq!(created["object"], "batch");
    assert_eq!(created["completion_window"], "24h");

    // A file that fails validation: exit 1, the errors printed, no files.
    let invalid = dir.path().join("invalid.jsonl");
    std::fs::write(&invalid, format!("{}not json\n", chat_lines(1))).unwrap();
    let o = cli(&app, &["submit", path_str(&invalid), "--endpoint", "/v1/chat/completions", "--wait"]).await;
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(" failed"), "{text}");
    assert!(text.contains("line 2: invalid_json_line"), "{text}");
    assert!(!dir.path().join("invalid.output.jsonl").exists());

    // The server's error message, with exit code 1; a usage error is 2.
    let o = cli(&app, &["submit", path_str(&input), "--endpoint", "/v1/nope"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Unsupported endpoint"), "{}", stderr(&o));
    let o = cli(&app, &["submit", path_str(&input), "--endpoint", "/v1/chat/completions", "--output", "x"]).await;
    assert_eq!(o.status.code(), Some(2), "--output needs --wait: {}", stderr(&o));
    let o = cli(&app, &["submit", path_str(&dir.path().join("missing.jsonl")), "--endpoint", "/v1/completions"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.jsonl"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_files_commands() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = c.submit(&chat_lines(20)).await;
        c.wait_terminal(&id, MINUTE).await;
        ids.push(id);
    }
    let newest = ids.last().unwrap().as_str();

    // batches list: one page, then every page.
    let page = json_of(&cli(&app, &["batches", "list", "--json", "--limit", "2"]).await);
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["id"], newest);
    let all = json_of(&cli(&app, &["batches", "list", "--json", "--limit", "1", "--all"]).await);
    let listed: Vec<&str> = all["data"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).rev().collect();
    assert_eq!(listed, expected);
    assert_eq!(all["has_more"], false);
    assert_eq!(all["first_id"], newest);
    let after = json_of(&cli(&app, &["batches", "list", "--json", "--after", newest]).await);
    expected.remove(0);
    let listed: Vec<&str> = after["data"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(listed, expected);
    let table = stdout(&cli(&app, &["batches", "list"]).await);
    assert!(table.starts_with("ID "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().nth(1).unwrap().contains(newest) && table.contains("20/20"), "{table}");

    // batches get.
    let batch = json_of(&cli(&app, &["batches", "get", newest, "--json"]).await);
    assert_eq!(batch, c.batch(newest).await);
    let human = stdout(&cli(&app, &["batches", "get", newest]).await);
    assert!(human.lines().any(|l| l.starts_with("status ") && l.ends_with(" completed")), "{human}");
    assert!(human.contains("20 total, 20 completed, 0 failed"), "{human}");

    // files list, get, download (to a path and to stdout), delete.
    let output_id = batch["output_file_id"].as_str().unwrap();
    let files = json_of(&cli(&app, &["files", "list", "--json"]).await);
    let file_ids: Vec<&str> = files["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(file_ids.contains(&output_id) && file_ids.contains(&batch["input_file_id"].as_str().unwrap()));
    let outputs = json_of(&cli(&app, &["files", "list", "--json", "--purpose", "batch_output", "--limit", "2"]).await);
    let outputs = outputs["data"].as_array().unwrap();
    assert_eq!(outputs.len(), 2);
    assert!(outputs.iter().all(|f| f["purpose"] == "batch_output"), "{outputs:?}");
    let file = json_of(&cli(&app, &["files", "get", output_id, "--json"]).await);
    assert_eq!(file["id"], output_id);
    let content = c.content(output_id).await;
    assert_eq!(file["bytes"], content.len() as i64);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("nested/out.jsonl");
    let o = cli(&app, &["files", "download", output_id, "-o", path_str(&dest)]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), content);
    let o = cli(&app, &["files", "download", output_id]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), content);
    let deleted = json_of(&cli(&app, &["files", "delete", output_id, "--json"]).await);
    assert_eq!(deleted["id"], output_id);
    assert_eq!(deleted["deleted"], true);

    // Unknown ids: exit 1 with the server's own message on stderr.
    let cases = [
        (vec!["files", "get", output_id], c.get(&format!("/v1/files/{output_id}")).await),
        (vec!["batches", "get", "batch_nope"], c.get("/v1/batches/batch_nope").await),
        (vec!["batches", "cancel", "batch_nope"], c.post("/v1/batches/batch_nope/cancel", Value::Null).await),
    ];
    for (args, answer) in cases {
        let o = cli(&app, &args).await;
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let message = error_of(&answer, 404)["message"].as_str().unwrap().to_string();
        assert!(stderr(&o).contains(&message), "{args:?}: {} lacks {message:?}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
    let o = cli(&app, &["batches", "get"]).await;
    assert_eq!(o.status.code(), Some(2), "usage error");

    // The API key goes out as a bearer token; an unreachable server is named.
    let o = cli(&app, &["batches", "get", newest, "--api-key", "sk-test", "--json"]).await;
    assert_eq!(json_of(&o)["id"], newest);
    let o = cli(&app, &["batches", "list", "--base-url", "http://127.0.0.1:9/v1"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach http://127.0.0.1:9/v1"), "{}", stderr(&o));
}

/// A sim slow enough that a batch of 300 runs for many seconds: the dispatcher's in-flight limit
/// matches the sim's so that no request waits in the sim's queue past the request timeout.
async fn slow_app(max_num_seqs: usize, base_latency_ms: u64) -> (SimHandle, App) {
    let sim = sim(SimConfig { max_num_seqs, base_latency_ms, ..SimConfig::default() }).await;
    let in_flight = max_num_seqs.to_string();
    let app = serve(&sim, &["--max-in-flight", &in_flight]);
    (sim, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_cancel_and_wait_on_a_running_batch() {
    let (_sim, app) = slow_app(2, 200).await;
    let c = &app.client;
    let id = c.submit(&chat_lines(100)).await;
    c.wait_until(&id, MINUTE, |b| b["status"] == "in_progress").await;

    let cancelled = json_of(&cli(&app, &["batches", "cancel", &id, "--json"]).await);
    assert_eq!(cancelled["id"], id.as_str());
    assert!(matches!(cancelled["status"].as_str(), Some("cancelling" | "cancelled")), "{cancelled}");

    // `batches wait` follows it to `cancelled`, downloads both files, and exits 4.
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("o.jsonl"), dir.path().join("e.jsonl"));
    let o = cli(&app, &["batches", "wait", &id, "--json", "-o", path_str(&out), "--errors", path_str(&err)]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let batch: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(batch["status"], "cancelled");
    let (out_lines, err_lines) = (if out.exists() { jsonl(&out) } else { Vec::new() }, jsonl(&err));
    let codes = check_exactly_once(&batch, &out_lines, &err_lines, 100);
    assert!(codes["batch_cancelled"] > 0, "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_without_a_terminal_stops_following_and_leaves_the_batch_running() {
    let (_sim, app) = slow_app(2, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    std::fs::write(&input, chat_lines(100)).unwrap();
    let child =
        command(&app, &["submit", path_str(&input), "--endpoint", "/v1/chat/completions", "--wait"]).spawn().unwrap();
    // Once the batch makes progress the client is following it (its Ctrl-C listener is set).
    let id = loop {
        let list = app.client.get("/v1/batches").await.body;
        if let Some(b) = list["data"].as_array().and_then(|d| d.first()) {
            if b["request_counts"]["completed"].as_i64().unwrap_or(0) > 0 {
                break b["id"].as_str().unwrap().to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let o = tokio::time::timeout(MINUTE, child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), id);
    let err = stderr(&o);
    assert!(err.contains(&format!("vllm-batch batches wait {id}")), "{err}");
    assert!(err.contains(&format!("vllm-batch batches cancel {id}")), "{err}");
    assert!(!err.contains("Cancel batch"), "no question without a terminal: {err}");
    let batch = app.client.batch(&id).await;
    assert_eq!(batch["status"], "in_progress", "the batch goes on: {batch}");
}

/// A tmux server of its own (socket in a temp folder), one session running a shell command on a
/// pseudo-terminal of a fixed size. Dropping it kills the server, on failure too.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(cols: u16, rows: u16, env: &[(&str, &str)], command: &str) -> Tmux {
        assert!(
            std::process::Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()),
            "tmux is missing: run tests/cli/install.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("tmux.conf");
        // The pane stays after its command ends, so the final screen can be read; no status line.
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\nset -g default-shell /bin/sh\n").unwrap();
        let tmux = Tmux { socket: dir.path().join("socket"), _dir: dir };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let mut args = vec!["-f", path_str(&conf), "new-session", "-d", "-s", "cli", "-x", &cols, "-y", &rows];
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for e in &env {
            args.extend(["-e", e.as_str()]);
        }
        args.push(command);
        tmux.run(&args);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        // Without `TMUX`: a test run from inside tmux must not look like a nested session.
        let o = std::process::Command::new("tmux")
            .env_remove("TMUX")
            .arg("-u")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The visible screen, each line's trailing blanks trimmed.
    fn screen(&self) -> String {
        let screen = self.run(&["capture-pane", "-p", "-t", "cli"]);
        screen.lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }

    fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "cli"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Polls the screen until `ready` holds; panics with the last screen after `within`.
    async fn wait_for(&self, what: &str, within: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "the screen never showed {what}; last screen:\n{screen}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the shell's `EXIT=<code>` line and returns the code and the screen.
    async fn exit_code(&self) -> (i32, String) {
        let screen = self.wait_for("the command's end", 2 * MINUTE, |s| s.contains("EXIT=")).await;
        let code = screen.split("EXIT=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        (code, screen)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").output();
    }
}

/// `vllm-batch submit INPUT --wait` under tmux (120x30), through a shell that prints its exit
/// code and then idles, so that the final screen stays as it was (a dead pane would scroll it).
/// The shell ignores Ctrl-C for itself (`trap :`), so that it survives to print the code; the
/// client gets Ctrl-C as usual (a trap, unlike an ignored signal, is not inherited).
fn submit_in_tmux(app: &App, input: &Path) -> Tmux {
    let base = format!("{}/v1", app.client.base);
    let command = format!(
        "trap : INT; '{BIN}' submit '{}' --endpoint /v1/chat/completions --wait --poll-interval 300ms; echo EXIT=$?; \
         sleep 600",
        input.display()
    );
    Tmux::start(120, 30, &[("OPENAI_BASE_URL", &base), ("LANG", "C.UTF-8")], &command)
}

/// The bar shows the batch under way: `in_progress` and an `N/300` counter with N > 0.
fn shows_progress(screen: &str) -> bool {
    let done = screen.lines().filter(|l| l.contains("in_progress")).find_map(|l| {
        let counter = l.split_whitespace().find(|w| w.ends_with("/300"))?;
        counter.trim_end_matches("/300").parse::<u32>().ok()
    });
    done.is_some_and(|n| n > 0)
}

/// Saves screens under `tests/out/` (git-ignored) for people to look at.
fn save_screens(name: &str, screens: &[(&str, &str)]) {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/out");
    std::fs::create_dir_all(&out).unwrap();
    let text: String =
        screens.iter().map(|(title, screen)| format!("--- {title} ---\n{}\n", screen.trim_end())).collect();
    std::fs::write(out.join(name), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_bar_on_a_terminal() {
    let (_sim, app) = slow_app(4, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    std::fs::write(&input, chat_lines(300)).unwrap();
    let tmux = submit_in_tmux(&app, &input);

    let following = tmux.wait_for("the progress bar", 2 * MINUTE, shows_progress).await;
    assert!(following.contains("Uploaded ") && following.contains("following it"), "{following}");
    let (code, end) = tmux.exit_code().await;
    save_screens("cli-progress.txt", &[("while following", &following), ("at the end", &end)]);
    assert_eq!(code, 0, "{end}");
    assert!(end.contains("300/300 completed"), "{end}");
    assert!(end.contains("300 requests, 300 ok, 0 failed"), "{end}");
    let output = dir.path().join("requests.output.jsonl");
    assert!(end.contains(path_str(&output)), "{end}");
    assert_eq!(jsonl(&output).len(), 300);
    assert!(!dir.path().join("requests.errors.jsonl").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_terminal_asks_and_cancels() {
    let (_sim, app) = slow_app(2, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    std::fs::write(&input, chat_lines(300)).unwrap();
    let tmux = submit_in_tmux(&app, &input);

    tmux.wait_for("the progress bar", 2 * MINUTE, shows_progress).await;
    tmux.send_keys(&["C-c"]);
    let asked = tmux.wait_for("the cancel prompt", MINUTE, |s| s.contains("Cancel batch")).await;
    assert!(asked.contains("[y/N]"), "{asked}");
    tmux.send_keys(&["y", "Enter"]);
    let (code, end) = tmux.exit_code().await;
    save_screens("cli-ctrl-c.txt", &[("after Ctrl-C", &asked), ("at the end", &end)]);
    assert_eq!(code, 4, "a cancelled batch exits 4:\n{end}");
    assert!(end.contains("cancelled"), "{end}");

    let id = app.client.get("/v1/batches").await.body["data"][0]["id"].as_str().unwrap().to_string();
    let batch = app.client.batch(&id).await;
    assert_eq!(batch["status"], "cancelled", "{batch}");
    // The files it downloaded are the server's, every custom_id once.
    let (out, err) = app.client.results(&batch).await;
    let codes = check_exactly_once(&batch, &out, &err, 300);
    assert!(codes["batch_cancelled"] > 0, "{codes:?}");
    assert_eq!(jsonl(&dir.path().join("requests.errors.jsonl")), err);
    if !out.is_empty() {
        assert_eq!(jsonl(&dir.path().join("requests.output.jsonl")), out);
    }
}

/// A batch of `n` lines that runs for seconds, in chunks of 5 (results arrive as it runs).
async fn slow_chunked_batch(n: usize) -> (SimHandle, App, String) {
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 250, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "5", "--max-in-flight", "2", "--concurrency", "fixed"]);
    let id = app.client.submit(&chat_lines(n)).await;
    (sim, app, id)
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_results_follow_survives_a_kill_and_restart() {
    let (_sim, app, id) = slow_chunked_batch(60).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("so-far.jsonl");
    let args = ["batches", "results", &id, "--follow", "-o", path_str(&file)];
    let mut first = command(&app, &args).spawn().unwrap();
    let deadline = Instant::now() + MINUTE;
    while lines_in(&file) < 10 {
        assert!(Instant::now() < deadline, "no lines arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await.unwrap();
    assert_eq!(app.client.batch(&id).await["status"], "in_progress", "stopped while the batch ran");
    let sidecar = dir.path().join("so-far.jsonl.cursor");
    assert!(sidecar.exists(), "the cursor is kept beside the file");
    // As if killed between an append and its cursor: lines past the recorded length go.
    std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"{\"custom_id\": \"torn").unwrap();

    let o = cli(&app, &args).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let batch = app.client.wait_terminal(&id, MINUTE).await;
    let expected = app.client.content(batch["output_file_id"].as_str().unwrap()).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected, "nothing lost, nothing repeated");
    assert!(!sidecar.exists(), "complete: no cursor left");

    // Without -o and --follow: what there is, on stdout (here all of it).
    let o = cli(&app, &["batches", "results", &id]).await;
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_stream_output_writes_lines_while_following() {
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 250, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "5", "--max-in-flight", "2", "--concurrency", "fixed"]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    std::fs::write(&input, chat_lines(60)).unwrap();
    let output = dir.path().join("requests.output.jsonl");
    let child = command(
        &app,
        &["submit", path_str(&input), "--endpoint", "/v1/chat/completions", "--wait", "--stream-output", "--json"],
    )
    .spawn()
    .unwrap();
    // Lines land in the output file while the batch runs.
    let deadline = Instant::now() + MINUTE;
    while lines_in(&output) < 10 {
        assert!(Instant::now() < deadline, "no lines arrived while following");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = app.client.get("/v1/batches").await.body["data"][0].clone();
    assert_eq!(running["status"], "in_progress", "streamed before the end: {running}");
    let o = tokio::time::timeout(2 * MINUTE, child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let batch: Value = serde_json::from_slice(&o.stdout).unwrap();
    let expected = app.client.content(batch["output_file_id"].as_str().unwrap()).await;
    assert_eq!(std::fs::read_to_string(&output).unwrap(), expected);
    assert!(!dir.path().join("requests.output.jsonl.cursor").exists());
}
