//! `Idempotency-Key` on `POST /v1/files` and `POST /v1/batches`, through the real server (on
//! SQLite, and on PostgreSQL in the suite's second pass): a retried create answers what the
//! first one made, whether the retry comes after it or beside it; the key with another request
//! is a 409; `vllm-batch submit` run twice with one key makes one batch.

use serde_json::{json, Value};

use crate::support::*;

const CHAT: &str = "/v1/chat/completions";

async fn create(c: &Client, key: &str, body: &Value) -> Answer {
    let req = c.http.post(c.url("/v1/batches")).header("Idempotency-Key", key).json(body);
    Client::answer(req.send().await.unwrap()).await
}

async fn upload(c: &Client, key: &str, content: &str) -> Answer {
    let part = reqwest::multipart::Part::bytes(content.as_bytes().to_vec()).file_name("in.jsonl");
    let form = reqwest::multipart::Form::new().text("purpose", "batch").part("file", part);
    let req = c.http.post(c.url("/v1/files")).header("Idempotency-Key", key).multipart(form);
    Client::answer(req.send().await.unwrap()).await
}

async fn count(c: &Client, path: &str) -> usize {
    c.get(path).await.body["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_create_answers_the_first_one() {
    let sim = sim(SimConfig { base_latency_ms: 2000, ..SimConfig::default() }).await;
    let app = serve(&sim, &[]);
    let c = &app.client;

    // Uploads: the same form twice is one file; another form under the key is refused.
    let first = upload(c, "upload-1", &chat_lines(3)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = upload(c, "upload-1", &chat_lines(3)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, first.body, "the retry answers the first upload's file");
    assert_eq!(count(c, "/v1/files?limit=100").await, 1);
    let e = error_of(&upload(c, "upload-1", &chat_lines(4)).await, 409);
    assert!(e["message"].as_str().unwrap().contains("different request"), "{e}");
    let file = first.body["id"].as_str().unwrap().to_string();

    // Creates: after the first, and beside it.
    let body = json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h", "metadata": {"n": "1"}});
    let a = create(c, "create-1", &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The same request spaced differently is the same request.
    let spaced = c
        .http
        .post(c.url("/v1/batches"))
        .header("Idempotency-Key", "create-1")
        .header("content-type", "application/json")
        .body(serde_json::to_string_pretty(&body).unwrap())
        .send()
        .await
        .unwrap();
    let b = Client::answer(spaced).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["id"], a.body["id"]);
    assert_eq!(b.body["status"], "validating", "the first answer, as it was: {}", b.body);
    let other = json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h"});
    let e = error_of(&create(c, "create-1", &other).await, 409);
    assert!(e["message"].as_str().unwrap().contains("create-1"), "{e}");

    let (x, y) = tokio::join!(create(c, "create-2", &other), create(c, "create-2", &other));
    assert_eq!((x.status, y.status), (200, 200), "{} {}", x.body, y.body);
    assert_eq!(x.body["id"], y.body["id"], "two creates at once with one key make one batch");
    assert_eq!(count(c, "/v1/batches?limit=100").await, 2);

    // A failed create frees its key: the corrected retry runs.
    let bad = json!({"input_file_id": file, "endpoint": "/v1/nope", "completion_window": "24h"});
    error_of(&create(c, "create-3", &bad).await, 400);
    assert_eq!(create(c, "create-3", &bad).await.status, 400);
    // A key that is not a short printable string is refused.
    let e = error_of(&create(c, "has space", &other).await, 400);
    assert_eq!(e["param"], "Idempotency-Key");
    assert_eq!(count(c, "/v1/batches?limit=100").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_run_twice_with_one_key_makes_one_batch() {
    let sim = sim(SimConfig { base_latency_ms: 2000, ..SimConfig::default() }).await;
    let app = serve(&sim, &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("requests.jsonl");
    std::fs::write(&input, chat_lines(5)).unwrap();
    let base = format!("{}/v1", app.client.base);
    let run = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args(["submit", input.to_str().unwrap(), "--endpoint", CHAT])
            .args(extra)
            .env("OPENAI_BASE_URL", &base)
            .env_remove("OPENAI_API_KEY")
            .output()
            .unwrap()
    };
    let submit = || {
        let out = run(&["--idempotency-key", "nightly-eval-42"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let first = submit();
    let second = submit();
    assert!(first.starts_with("batch_"), "{first}");
    assert_eq!(first, second, "the second run answers the first run's batch");
    assert_eq!(count(&app.client, "/v1/batches?limit=100").await, 1);
    assert_eq!(count(&app.client, "/v1/files?limit=100").await, 1);
    // Without a key, each run is its own batch.
    assert!(run(&[]).status.success());
    assert_eq!(count(&app.client, "/v1/batches?limit=100").await, 2);
}
