//! The Batches API over HTTP: the Batch object field by field, each status transition with its
//! stamp, live counts, list pagination, cancel, and the error envelope of each misuse.

use serde_json::json;

use crate::support::*;

const BATCH_FIELDS: &[&str] = &[
    "id",
    "object",
    "endpoint",
    "model",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "usage",
    "metadata",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_fields_and_live_counts() {
    let sim = sim(SimConfig { max_num_seqs: 4, base_latency_ms: 100, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--chunk-size", "10"]);
    let c = &app.client;
    let file = c.upload(&chat_lines(60)).await;
    let created = c
        .post(
            "/v1/batches",
            json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h",
                   "metadata": {"project": "e2e", "owner": "tests"}}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let b = &created.body;
    for f in BATCH_FIELDS {
        assert!(b.get(*f).is_some(), "Batch object lacks {f}: {b}");
    }
    let id = b["id"].as_str().unwrap();
    assert!(id.starts_with("batch_"));
    assert_eq!(b["object"], "batch");
    assert_eq!(b["status"], "validating");
    assert_eq!(b["endpoint"], "/v1/chat/completions");
    assert_eq!(b["input_file_id"], file.as_str());
    assert_eq!(b["completion_window"], "24h");
    assert_eq!(b["metadata"], json!({"project": "e2e", "owner": "tests"}));
    assert_eq!(b["expires_at"].as_i64().unwrap() - b["created_at"].as_i64().unwrap(), 86_400);
    assert_eq!(b["request_counts"], json!({"total": 0, "completed": 0, "failed": 0}));
    for stamp in
        ["in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at"]
    {
        assert!(b[stamp].is_null(), "{stamp} set at creation");
    }

    // Running: counts move before the batch ends (60 requests, 4 at a time, 100 ms each).
    let running = c
        .wait_until(id, MINUTE, |b| {
            b["status"] == "in_progress" && b["request_counts"]["completed"].as_i64().unwrap() > 0
        })
        .await;
    assert_eq!(running["request_counts"]["total"], 60);
    assert!(running["request_counts"]["completed"].as_i64().unwrap() < 60, "{running}");
    assert!(running["in_progress_at"].is_i64());
    assert_eq!(running["model"], MODEL);

    let done = c.wait_terminal(id, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    for stamp in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[stamp].is_i64(), "{stamp} not set: {done}");
    }
    assert!(done["finalizing_at"].as_i64() <= done["completed_at"].as_i64());
    assert!(done["error_file_id"].is_null(), "no errors, no error file");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, 60);
    let output = c.get(&format!("/v1/files/{}", done["output_file_id"].as_str().unwrap())).await;
    assert_eq!(output.body["purpose"], "batch_output");

    let e = error_of(&c.post(&format!("/v1/batches/{id}/cancel"), json!({})).await, 409);
    assert!(e["message"].as_str().unwrap().contains("completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pagination_and_models() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let file = c.upload(&chat_lines(2)).await;
    let mut ids = Vec::new();
    for window in ["24h", "1h", "7d", "30m", "24h"] {
        ids.push(c.create_batch(&file, "/v1/chat/completions", window).await["id"].as_str().unwrap().to_string());
    }
    ids.reverse(); // newest first
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/batches?limit=2&after={a}"),
            None => "/v1/batches?limit=2".to_string(),
        };
        let page = c.get(&path).await;
        assert_eq!(page.status, 200);
        assert_eq!(page.body["object"], "list");
        let data = page.body["data"].as_array().unwrap();
        assert_eq!(page.body["first_id"], data[0]["id"]);
        assert_eq!(page.body["last_id"], data[data.len() - 1]["id"]);
        seen.extend(data.iter().map(|b| b["id"].as_str().unwrap().to_string()));
        if page.body["has_more"] == false {
            break;
        }
        after = Some(page.body["last_id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ids);
    let default_page = c.get("/v1/batches").await;
    assert_eq!(default_page.body["data"].as_array().unwrap().len(), 5);
    assert_eq!(default_page.body["has_more"], false);
    let e = error_of(&c.get("/v1/batches?limit=101").await, 400);
    assert_eq!(e["param"], "limit");

    let models = c.get("/v1/models").await;
    assert_eq!(models.status, 200);
    assert_eq!(models.body["object"], "list");
    assert_eq!(models.body["data"][0]["id"], MODEL);
    assert_eq!(models.body["data"][0]["object"], "model");
    for id in &ids {
        c.wait_terminal(id, MINUTE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_misuse_gets_clear_errors() {
    // Slow upstream: the batches created here stay running while the test probes them.
    let sim = sim(SimConfig { base_latency_ms: 3000, ..SimConfig::default() }).await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let file = c.upload(&chat_lines(1)).await;
    let create = |body: serde_json::Value| {
        let c = c.clone();
        async move { c.post("/v1/batches", body).await }
    };
    let base = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let e = error_of(&create(with("endpoint", json!("/v1/images/generations"))).await, 400);
    assert_eq!(e["param"], "endpoint");
    for bad in ["", "24", "0h", "1.5h", "1w", "31d"] {
        let e = error_of(&create(with("completion_window", json!(bad))).await, 400);
        assert_eq!(e["param"], "completion_window", "{bad}");
    }
    let too_many: serde_json::Map<_, _> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let e = error_of(&create(with("metadata", json!(too_many))).await, 400);
    assert_eq!(e["param"], "metadata");
    let e = error_of(&create(with("metadata", json!({"k".repeat(65): "v"}))).await, 400);
    assert_eq!(e["param"], "metadata");
    let e = error_of(&create(with("metadata", json!({"k": "v".repeat(513)}))).await, 400);
    assert_eq!(e["param"], "metadata");
    assert_eq!(create(with("metadata", json!({"k".repeat(64): "v".repeat(512)}))).await.status, 200);
    error_of(&create(with("input_file_id", json!("file-0123456789abcdef0123456789abcdef"))).await, 404);
    let e = error_of(&create(with("input_file_id", json!("../etc/passwd"))).await, 400);
    assert_eq!(e["param"], "input_file_id");
    let notes =
        c.upload_raw(b"hello".to_vec(), "n.txt", Some("user_data")).await.body["id"].as_str().unwrap().to_string();
    let e = error_of(&create(with("input_file_id", json!(notes))).await, 400);
    assert_eq!(e["param"], "input_file_id");
    let e = error_of(&create(json!({"endpoint": "/v1/chat/completions"})).await, 400);
    assert!(e["message"].as_str().unwrap().contains("input_file_id"));
    // Every 400 from reading the body names where the problem is.
    assert_eq!(e["param"], "input_file_id", "{e}");
    let e = error_of(&create(with("endpoint", json!(5))).await, 400);
    assert_eq!(e["param"], "endpoint", "{e}");
    let e = error_of(&create(with("output_expires_after", json!({"anchor": "created_at"}))).await, 400);
    assert_eq!(e["param"], "output_expires_after.seconds", "{e}");
    for bad in [json!(3600.5), json!("3600"), json!(null)] {
        let e =
            error_of(&create(with("output_expires_after", json!({"anchor": "created_at", "seconds": bad}))).await, 400);
        assert_eq!(e["param"], "output_expires_after.seconds", "{bad}: {e}");
    }
    // A whole number of seconds written as a float is a whole number of seconds.
    let a = create(with("output_expires_after", json!({"anchor": "created_at", "seconds": 3600.0}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let raw = c
        .http
        .post(c.url("/v1/batches"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    // Not JSON at all: nothing to point at, as OpenAI answers.
    let e: serde_json::Value = raw.json().await.unwrap();
    assert!(e["error"]["param"].is_null(), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("could not parse the JSON body"), "{e}");
    let e = error_of(&create(with("output_expires_after", json!({"anchor": "created_at", "seconds": 10}))).await, 400);
    assert_eq!(e["param"], "output_expires_after.seconds");
    error_of(&c.get("/v1/batches/batch_0123456789abcdef0123456789abcdef").await, 404);
    error_of(&c.get("/v1/batches/not-an-id").await, 404);
    error_of(&c.post("/v1/batches/batch_0123456789abcdef0123456789abcdef/cancel", json!({})).await, 404);
    // The input file of a running batch cannot be deleted from under it.
    let e = error_of(&c.delete(&format!("/v1/files/{file}")).await, 409);
    assert!(e["message"].as_str().unwrap().contains("batch_"));
    assert_eq!(c.get("/health").await.status, 200);
}
