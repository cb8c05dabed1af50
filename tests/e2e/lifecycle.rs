//! File expiry and the garbage collector through the real server: OpenAI's `expires_after` on
//! upload and `output_expires_after` on batches, the `--file-retention` default, an expired file
//! answering 404 at once, and its body and row removed by the collector — but never the input of
//! a batch that is still running. The suite lowers the shortest expiry to 1 s
//! (`VLLM_BATCH_TEST_MIN_FILE_EXPIRY_SECONDS`) to see files expire.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::support::*;

const CHAT: &str = "/v1/chat/completions";

const MIN_EXPIRY_1S: (&str, &str) = ("VLLM_BATCH_TEST_MIN_FILE_EXPIRY_SECONDS", "1");

/// `serve` on `sim` with a collector pass every 300 ms, `extra` arguments and `env`.
fn serve_collecting(sim: &SimHandle, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str(), "--gc-interval", "300ms"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    Proc::start_with_env("serve", dir, &args, env)
}

fn serve_expiring(sim: &SimHandle, dir: &Path, extra: &[&str]) -> Proc {
    serve_collecting(sim, dir, extra, &[MIN_EXPIRY_1S])
}

async fn upload_with(c: &Client, content: &str, purpose: &str, fields: &[(&str, &str)]) -> Answer {
    let mut form = reqwest::multipart::Form::new().text("purpose", purpose.to_string());
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let part = reqwest::multipart::Part::bytes(content.as_bytes().to_vec()).file_name("in.jsonl");
    Client::answer(c.http.post(c.url("/v1/files")).multipart(form.part("file", part)).send().await.unwrap()).await
}

/// Waits until `path` is gone from disk (the collector runs every 300 ms).
async fn gone_from_disk(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while path.exists() {
        assert!(Instant::now() < deadline, "{} was never deleted", path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_404(c: &Client, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get(path).await.status != 404 {
        assert!(Instant::now() < deadline, "{path} never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_expire_and_the_collector_deletes_them() {
    let sim = default_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let app = serve_expiring(&sim, dir.path(), &[]);
    let c = &app.client();

    let short = upload_with(
        c,
        &chat_lines(2),
        "batch",
        &[("expires_after[anchor]", "created_at"), ("expires_after[seconds]", "2")],
    )
    .await;
    assert_eq!(short.status, 200, "{}", short.body);
    assert_eq!(short.body["expires_at"].as_i64().unwrap(), short.body["created_at"].as_i64().unwrap() + 2);
    // Without expires_after: batch inputs keep the 30-day retention, other files stay.
    let input = upload_with(c, &chat_lines(2), "batch", &[]).await;
    assert_eq!(input.body["expires_at"].as_i64().unwrap(), input.body["created_at"].as_i64().unwrap() + 30 * 86_400);
    let notes = upload_with(c, "notes", "user_data", &[]).await;
    assert!(notes.body["expires_at"].is_null(), "{}", notes.body);
    // Bad expiry fields name themselves.
    let e = error_of(&upload_with(c, "x", "batch", &[("expires_after[anchor]", "last_used")]).await, 400);
    assert_eq!(e["param"], "expires_after[anchor]");
    for bad in ["0", "2592001", "1.5", "soon"] {
        let e = error_of(&upload_with(c, "x", "batch", &[("expires_after[seconds]", bad)]).await, 400);
        assert_eq!(e["param"], "expires_after[seconds]", "{bad}");
    }

    let id = short.body["id"].as_str().unwrap();
    let body = dir.path().join("files").join("files").join(id);
    assert!(body.exists());
    wait_404(c, &format!("/v1/files/{id}")).await;
    assert_eq!(c.get(&format!("/v1/files/{id}/content")).await.status, 404);
    let listed = c.get("/v1/files?limit=100").await.body.to_string();
    assert!(!listed.contains(id), "an expired file leaves the list: {listed}");
    gone_from_disk(&body).await;
    let page = reqwest::get(c.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(sample(&page, "vllm_gc_deleted_total{kind=\"file\"}").unwrap() >= 1.0, "{page}");
    assert!(sample(&page, "vllm_gc_last_run_timestamp_seconds").unwrap() > 0.0);
    // The others stay.
    assert_eq!(c.get(&format!("/v1/files/{}", input.body["id"].as_str().unwrap())).await.status, 200);
    assert_eq!(c.get(&format!("/v1/files/{}", notes.body["id"].as_str().unwrap())).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_batch_keeps_its_expiring_input_and_its_outputs_expire_after_it() {
    // 20 lines of 1.5 s, 4 at a time: the batch runs well past its input's 1 s expiry.
    let sim = sim(SimConfig { max_num_seqs: 4, base_latency_ms: 1500, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let app = serve_expiring(
        &sim,
        dir.path(),
        &["--concurrency", "fixed", "--max-in-flight", "4", "--request-timeout", "60s"],
    );
    let c = &app.client();
    let n = 20;
    let up = upload_with(c, &chat_lines(n), "batch", &[("expires_after[seconds]", "1")]).await;
    let input = up.body["id"].as_str().unwrap().to_string();
    let created = c
        .post(
            "/v1/batches",
            json!({"input_file_id": input, "endpoint": CHAT, "completion_window": "24h",
                   "output_expires_after": {"anchor": "created_at", "seconds": 30}}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let input_body = dir.path().join("files").join("files").join(&input);
    // The input expired for its users, but its body stays while the batch runs.
    wait_404(c, &format!("/v1/files/{input}")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(input_body.exists(), "the collector deleted the input of a running batch");
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    // Once the batch has ended, the collector removes the input; the output expires 30 s after
    // the batch's creation.
    gone_from_disk(&input_body).await;
    let output = done["output_file_id"].as_str().unwrap();
    let file = c.get(&format!("/v1/files/{output}")).await;
    assert_eq!(file.body["expires_at"].as_i64().unwrap(), done["created_at"].as_i64().unwrap() + 30, "{}", file.body);
    wait_404(c, &format!("/v1/files/{output}")).await;
    gone_from_disk(&dir.path().join("files").join("files").join(output)).await;
}

async fn metric(c: &Client, series: &str) -> f64 {
    let page = reqwest::get(c.url("/metrics")).await.unwrap().text().await.unwrap();
    sample(&page, series).unwrap_or(0.0)
}

/// Writes `content` at `path` (creating its folder), as a killed process would have left it.
fn plant(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_removes_what_killed_processes_left_and_never_what_is_live() {
    // Lines of 300 ms, 2 at a time: the second batch runs for several collector passes.
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 300, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--concurrency", "fixed", "--max-in-flight", "2", "--chunk-size", "4"];
    let app = serve_collecting(&sim, dir.path(), &extra, &[("VLLM_BATCH_TEST_ABANDONED_UPLOAD_SECONDS", "2")]);
    let c = &app.client();
    let root = dir.path().join("files");

    // An ended batch; a worker that lost its lease wrote one more segment after finalization.
    let ended = c.submit(&chat_lines(3)).await;
    let ended = c.wait_terminal(&ended, 2 * MINUTE).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let late = root.join(format!("parts/{}/00000000-1-0001.out.jsonl", ended["id"].as_str().unwrap()));
    plant(&late, "{\"late\":true}\n");
    // Parts of a batch that does not exist, and an upload's temporary file whose process died.
    let unknown = root.join("parts/batch_00000000000000000000000000000000/00000000-1-0000.out.jsonl");
    plant(&unknown, "x\n");
    let stale_tmp = root.join("tmp/0123456789abcdef0123456789abcdef");
    plant(&stale_tmp, "half an upload");

    // A running batch: a segment of fence 0 (no holder ever had it: fences start at 1) is one
    // nothing reads; the live holders' segments must all stay.
    let n = 24;
    let running = c.submit(&chat_lines(n)).await;
    c.wait_until(&running, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 2).await;
    let superseded = root.join(format!("parts/{running}/00000001-0-0000.out.jsonl"));
    plant(&superseded, "{\"stale\":true}\n");

    // An upload that trickles in for ~4 s (past the 2 s abandonment age, its temporary file
    // touched by every write) is live and must arrive whole.
    let content = chat_lines(40);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        content.as_bytes().chunks(content.len() / 20 + 1).map(|p| Ok(p.to_vec())).collect();
    let total = content.len() as u64;
    let trickle = futures_util::stream::iter(pieces).then(|p| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        p
    });
    let form = reqwest::multipart::Form::new().text("purpose", "batch").part(
        "file",
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(trickle), total)
            .file_name("slow.jsonl"),
    );
    let slow = Client::answer(c.http.post(c.url("/v1/files")).multipart(form).send().await.unwrap()).await;
    assert_eq!(slow.status, 200, "{}", slow.body);
    assert_eq!(c.content(slow.body["id"].as_str().unwrap()).await, content, "the trickled upload arrived whole");

    for garbage in [&late, &unknown, &stale_tmp, &superseded] {
        gone_from_disk(garbage).await;
    }
    assert!(metric(c, "vllm_gc_deleted_total{kind=\"part\"}").await >= 3.0);
    assert!(metric(c, "vllm_gc_deleted_total{kind=\"upload\"}").await >= 1.0);
    // Nothing live was lost: every line of the running batch is in its output, once.
    let done = c.wait_terminal(&running, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    // What is stored is measured by the next pass: the batch files' bytes, by kind.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let input = metric(c, "vllm_storage_bytes{kind=\"input\"}").await;
        let output = metric(c, "vllm_storage_bytes{kind=\"output\"}").await;
        if input >= (content.len() + chat_lines(n).len()) as f64 && output > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "stored bytes never measured: input {input}, output {output}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_mid_pass_loses_nothing_live() {
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 200, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--concurrency", "fixed", "--max-in-flight", "2"];
    // Each removal is followed by a 400 ms pause, so the kill lands inside a pass.
    let env = [MIN_EXPIRY_1S, ("VLLM_BATCH_TEST_GC_STEP_DELAY_MS", "400")];
    let mut app = serve_collecting(&sim, dir.path(), &extra, &env);
    let c = app.client();
    let mut expiring = Vec::new();
    for _ in 0..8 {
        let up = upload_with(&c, &chat_lines(1), "batch", &[("expires_after[seconds]", "1")]).await;
        expiring.push(up.body["id"].as_str().unwrap().to_string());
    }
    let keep = upload_with(&c, "kept notes", "user_data", &[]).await.body["id"].as_str().unwrap().to_string();
    let n = 30;
    let running = c.submit(&chat_lines(n)).await;
    // The collector is inside a pass once it has removed the first file (8 take ≥ 3 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&c, "vllm_gc_deleted_total{kind=\"file\"}").await < 1.0 {
        assert!(Instant::now() < deadline, "the collector never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.kill9();
    let left = expiring.iter().filter(|id| dir.path().join("files/files").join(id).exists()).count();
    assert!(left > 0, "the kill came after the pass had finished");

    // Killed between a row and its body, a body is left without a row: the restarted collector
    // removes those once idle for the abandonment age (1 s here instead of an hour).
    let env = [MIN_EXPIRY_1S, ("VLLM_BATCH_TEST_ABANDONED_UPLOAD_SECONDS", "1")];
    let app = serve_collecting(&sim, dir.path(), &extra, &env);
    let c = app.client();
    for id in &expiring {
        // The last uploads may expire only now.
        wait_404(&c, &format!("/v1/files/{id}")).await;
        gone_from_disk(&dir.path().join("files/files").join(id)).await;
    }
    assert_eq!(c.content(&keep).await, "kept notes");
    let done = c.wait_terminal(&running, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_folder_under_its_margin_refuses_uploads_and_holds_finalization_until_space_returns() {
    // The volume's free space is read from this file instead (the guard's test hook), so the
    // test can fill and free the disk at will.
    let sim = sim(SimConfig { max_num_seqs: 4, base_latency_ms: 300, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let probe = tempfile::NamedTempFile::new().unwrap();
    let set_free = |bytes: u64| std::fs::write(probe.path(), bytes.to_string()).unwrap();
    set_free(100 << 30);
    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str(), "--min-free-disk", "2GiB"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&["--concurrency", "fixed", "--max-in-flight", "4"]);
    let probe_path = probe.path().to_str().unwrap().to_string();
    let app = Proc::start_with_env("serve", dir.path(), &args, &[("VLLM_BATCH_TEST_DISK_FREE_FILE", &probe_path)]);
    let c = &app.client();
    assert_eq!(c.get("/ready").await.status, 200);
    let n = 12;
    let id = c.submit(&chat_lines(n)).await;
    c.wait_until(&id, MINUTE, |b| b["status"] == "in_progress").await;

    // The disk fills up while the batch runs.
    set_free(1 << 30);
    let ready = c.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let why = ready.body["checks"]["disk"]["error"].as_str().unwrap();
    assert!(why.contains("--min-free-disk") && why.contains(&dir.path().display().to_string()), "{why}");
    let refused = c.upload_raw(chat_lines(2).into_bytes(), "in.jsonl", Some("batch")).await;
    let e = error_of(&refused, 507);
    assert_eq!(e["code"], "insufficient_storage", "{e}");
    assert!(e["message"].as_str().unwrap().contains("--min-free-disk"), "{e}");
    assert!(metric(c, "vllm_disk_min_free_bytes").await >= (2u64 << 30) as f64);

    // Chunks already held finish; nothing new is claimed and the batch is not finalized —
    // it waits, it does not fail.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = c.batch(&id).await;
    assert!(["in_progress", "finalizing"].contains(&held["status"].as_str().unwrap()), "{held}");
    assert!(held["output_file_id"].is_null(), "{held}");
    assert!(app.logs().iter().any(|l| l.contains("no chunk or finalization is claimed")));

    // Space returns: the batch ends with every line, and uploads are accepted again.
    set_free(100 << 30);
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert_eq!(c.get("/ready").await.status, 200);
    assert_eq!(c.upload_raw(chat_lines(2).into_bytes(), "in.jsonl", Some("batch")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_that_expires_before_validation_still_runs_its_batch() {
    // No worker at first: the batch waits in `validating` while its input expires.
    let sim = default_sim().await;
    let dir = tempfile::tempdir().unwrap();
    migrate(dir.path(), &[]);
    let upstream = sim.base_url();
    let env = [MIN_EXPIRY_1S];
    let api = Proc::start_with_env("api", dir.path(), &["--upstream", upstream.as_str()], &env);
    let c = &api.client();
    let n = 5;
    let up = upload_with(c, &chat_lines(n), "batch", &[("expires_after[seconds]", "2")]).await;
    let input = up.body["id"].as_str().unwrap().to_string();
    let id = c.create_batch(&input, CHAT, "24h").await["id"].as_str().unwrap().to_string();
    wait_404(c, &format!("/v1/files/{input}")).await;
    // A batch on a file that has expired is refused, as on a missing one.
    let late =
        c.post("/v1/batches", json!({"input_file_id": input, "endpoint": CHAT, "completion_window": "24h"})).await;
    assert_eq!(error_of(&late, 404)["param"], "id");

    let mut args = vec!["--upstream", upstream.as_str(), "--gc-interval", "300ms"];
    args.extend_from_slice(FAST);
    let _worker = Proc::start_with_env("worker", dir.path(), &args, &env);
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
}
