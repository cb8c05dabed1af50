//! File expiry and the garbage collector through the real server: OpenAI's `expires_after` on
//! upload and `output_expires_after` on batches, the `--file-retention` default, an expired file
//! answering 404 at once, and its body and row removed by the collector — but never the input of
//! a batch that is still running. The suite lowers the shortest expiry to 1 s
//! (`VLLM_BATCH_TEST_MIN_FILE_EXPIRY_SECONDS`) to see files expire.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const CHAT: &str = "/v1/chat/completions";

fn serve_expiring(sim: &SimHandle, dir: &Path, extra: &[&str]) -> Proc {
    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str(), "--gc-interval", "300ms"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    Proc::start_with_env("serve", dir, &args, &[("VLLM_BATCH_TEST_MIN_FILE_EXPIRY_SECONDS", "1")])
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
