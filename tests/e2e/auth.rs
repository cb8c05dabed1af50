//! API keys, isolation between owners, and the limits that protect the server: the real binary
//! over HTTP with keys made by `vllm-batch keys`, plus the loopback rule checked on the real
//! router with a remote peer address.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::support::*;

/// `vllm-batch keys …` on the server's data folder; returns stdout.
pub(crate) fn keys(dir: &Path, args: &[&str]) -> String {
    let mut command = std::process::Command::new(BIN);
    use_test_database(&mut command, dir);
    let out = command.arg("keys").args(args).arg("--data-dir").arg(dir).output().unwrap();
    assert!(out.status.success(), "keys {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn create_key(dir: &Path, name: &str, admin: bool) -> String {
    let mut args = vec!["create", "--name", name, "--json"];
    if admin {
        args.push("--admin");
    }
    let v: Value = serde_json::from_str(&keys(dir, &args)).unwrap();
    assert_eq!(v["name"], name);
    v["key"].as_str().unwrap().to_string()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_authenticate_and_owners_are_isolated() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let dir = app.data_dir();
    let base = app.client.base.clone();
    let alice_key = create_key(&dir, "alice", false);
    let bob_key = create_key(&dir, "bob", false);
    let admin_key = create_key(&dir, "ops", true);
    assert!(alice_key.starts_with("sk-vb-") && alice_key.len() == 54);
    let db = match test_database_url(&dir) {
        Some(url) => psql(&url, "SELECT * FROM api_keys").into_bytes(),
        // The main file and its write-ahead log, where recent writes still are.
        None => ["vllm-batch.db", "vllm-batch.db-wal"]
            .iter()
            .flat_map(|f| std::fs::read(dir.join(f)).unwrap_or_default())
            .collect(),
    };
    assert!(db.windows(8).any(|w| w == &alice_key.as_bytes()[6..14]), "the lookup prefix is stored");
    assert!(!db.windows(alice_key.len()).any(|w| w == alice_key.as_bytes()), "only a hash is stored");
    // The server notices the new keys at once (no cache window).
    let anonymous = &app.client;
    for path in ["/v1/files", "/v1/batches", "/v1/models", "/api/metrics/vllm", "/v1/health", "/health?verbose=1"] {
        let e = error_of(&anonymous.get(path).await, 401);
        assert_eq!(e["code"], "invalid_api_key", "{path}");
    }
    for path in ["/health", "/ready", "/", "/openapi.json", "/metrics"] {
        assert_eq!(anonymous.get(path).await.status, 200, "{path} stays public");
    }
    let wrong = Client::with_key(base.clone(), &format!("sk-vb-{}", "0".repeat(48)));
    let e = error_of(&wrong.get("/v1/batches").await, 401);
    assert!(e["message"].as_str().unwrap().contains("Incorrect API key"), "{e}");
    assert!(!e["message"].as_str().unwrap().contains(&"0".repeat(20)), "the key is not echoed whole");
    error_of(&Client::with_key(base.clone(), "not-a-key").get("/v1/files").await, 401);

    let alice = Client::with_key(base.clone(), &alice_key);
    let bob = Client::with_key(base.clone(), &bob_key);
    let admin = Client::with_key(base.clone(), &admin_key);
    let a_batch = alice.submit(&chat_lines(5)).await;
    let a_done = alice.wait_terminal(&a_batch, MINUTE).await;
    assert_eq!(a_done["status"], "completed");
    let a_input = a_done["input_file_id"].as_str().unwrap().to_string();
    let a_output = a_done["output_file_id"].as_str().unwrap().to_string();
    let b_batch = bob.submit(&chat_lines(3)).await;
    bob.wait_terminal(&b_batch, MINUTE).await;

    // Nobody reads, lists, cancels or deletes what is not theirs: it does not exist for them.
    for (path, what) in [
        (format!("/v1/files/{a_input}"), "file"),
        (format!("/v1/files/{a_input}/content"), "content"),
        (format!("/v1/files/{a_output}"), "output file"),
        (format!("/v1/files/{a_output}/content"), "output content"),
        (format!("/v1/batches/{a_batch}"), "batch"),
    ] {
        error_of(&bob.get(&path).await, 404);
        assert_eq!(alice.get(&path).await.status, 200, "alice reads her {what}");
        assert_eq!(admin.get(&path).await.status, 200, "admin reads alice's {what}");
    }
    error_of(&bob.post(&format!("/v1/batches/{a_batch}/cancel"), json!({})).await, 404);
    error_of(&bob.delete(&format!("/v1/files/{a_input}")).await, 404);
    let e = error_of(
        &bob.post(
            "/v1/batches",
            json!({"input_file_id": a_input, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        )
        .await,
        404,
    );
    assert!(e["message"].as_str().unwrap().contains(&a_input));
    let bob_files = ids(&bob.get("/v1/files").await.body);
    assert!(!bob_files.contains(&a_input) && !bob_files.contains(&a_output), "{bob_files:?}");
    assert_eq!(bob_files.len(), 2, "bob's input and output: {bob_files:?}");
    assert_eq!(ids(&bob.get("/v1/batches").await.body), vec![b_batch.clone()]);
    assert_eq!(ids(&alice.get("/v1/batches").await.body), vec![a_batch.clone()]);
    let all = ids(&admin.get("/v1/batches").await.body);
    assert!(all.contains(&a_batch) && all.contains(&b_batch), "admin sees all: {all:?}");
    assert_eq!(ids(&admin.get("/v1/files").await.body).len(), 4);
    // Alice may delete her own file; the deletion was really refused for bob, not lost.
    assert_eq!(alice.delete(&format!("/v1/files/{a_output}")).await.status, 200);

    // Listing shows prefixes and use, never secrets; revoking takes effect at once.
    let listed: Value = serde_json::from_str(&keys(&dir, &["list", "--json"])).unwrap();
    let text = listed.to_string();
    assert!(!text.contains(&bob_key) && !text.contains("\"hash\"") && !text.contains("salt"));
    let bob_row = listed.as_array().unwrap().iter().find(|k| k["name"] == "bob").unwrap().clone();
    assert!(bob_row["prefix"].as_str().unwrap().starts_with(&bob_key[..14]));
    assert!(bob_row["last_used_at"].is_i64(), "{bob_row}");
    keys(&dir, &["revoke", bob_row["id"].as_str().unwrap()]);
    error_of(&bob.get("/v1/batches").await, 401);
    assert_eq!(alice.get("/v1/batches").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_answer_with_clear_4xx() {
    let sim = sim(SimConfig { max_num_seqs: 1, base_latency_ms: 2000, ..SimConfig::default() }).await;
    let args = ["--rate-limit", "1", "--rate-limit-burst", "1", "--max-open-batches-per-key", "1"];
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--max-json-body-bytes", "2000", "--metrics-token", "scrape-secret"]);
    let app = serve(&sim, &all);
    let key = create_key(&app.data_dir(), "carol", false);
    let carol = Client::with_key(app.client.base.clone(), &key);

    // Rate: one request a second with no burst; a quick second one is refused with Retry-After.
    let mut limited = None;
    for _ in 0..10 {
        let a = carol.get("/v1/batches").await;
        if a.status == 429 {
            limited = Some(a);
            break;
        }
        assert!(a.status == 200 || a.status == 401, "{}", a.body);
    }
    let limited = limited.expect("the rate limit answered 429");
    let e = error_of(&limited, 429);
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert!(limited.headers.get("retry-after").is_some());

    // Open batches: the second unfinished batch of one owner is refused.
    let wait = |c: Client, path: String, body: Value| async move {
        loop {
            let a = c.post(&path, body.clone()).await;
            if a.status != 429 || a.body["error"]["code"] != "rate_limit_exceeded" {
                return a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
    };
    let upload = loop {
        let a = carol.upload_raw(chat_lines(3).into_bytes(), "in.jsonl", Some("batch")).await;
        if a.status != 429 {
            break a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    };
    let file = upload.body["id"].as_str().unwrap().to_string();
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    assert_eq!(wait(carol.clone(), "/v1/batches".into(), body.clone()).await.status, 200);
    let second = wait(carol.clone(), "/v1/batches".into(), body.clone()).await;
    let e = error_of(&second, 429);
    assert_eq!(e["code"], "too_many_open_batches");

    // JSON bodies are bounded.
    let big = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h",
                     "metadata": {"k": "v".repeat(500), "l": "v".repeat(500), "m": "v".repeat(500), "n": "v".repeat(500)}});
    let too_big = wait(carol.clone(), "/v1/batches".into(), big).await;
    error_of(&too_big, 413);

    // /metrics has its own token.
    assert_eq!(app.client.get("/metrics").await.status, 401);
    let scraper = Client::with_key(app.client.base.clone(), "scrape-secret");
    let ok = scraper.get("/metrics").await;
    assert_eq!(ok.status, 200);
    assert!(ok.body.as_str().unwrap().contains("vllm_request_total"));
}

/// The no-key rule on the real router: loopback peers are served, remote ones refused unless
/// the server runs with --insecure-no-auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_only_loopback_is_served() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    let sqlite = vllm_batch_store::SqlStore::connect(&url, &Default::default()).await.unwrap();
    vllm_batch_store::Store::migrate(&sqlite).await.unwrap();
    let store: Arc<dyn vllm_batch_store::Store> = Arc::new(sqlite);
    let files: Arc<dyn vllm_batch_store::FileStore> =
        Arc::new(vllm_batch_store::LocalFileStore::open(dir.path().join("files")).await.unwrap());
    let state = |insecure: bool| vllm_batch_api::AppState {
        store: store.clone(),
        files: files.clone(),
        upstreams: vllm_batch_upstream::Upstreams::new(
            vllm_batch_upstream::parse_upstreams("http://127.0.0.1:9/v1").unwrap(),
            None,
        ),
        limits: vllm_batch_api::ApiLimits::default(),
        wake: Arc::new(tokio::sync::Notify::new()),
        gpus: vllm_batch_metrics::gpu::GpuSampler::disabled(),
        started: Instant::now(),
        prometheus_url: None,
        auth: Arc::new(vllm_batch_api::auth::Auth::new(insecure, None, 0, 0)),
        batch_cache: Arc::default(),
        disk: vllm_batch_store::DiskGuard::off(),
        webhooks: vllm_batch_api::WebhookSettings::default(),
    };
    let call_with_host = |insecure: bool, peer: &str, host: Option<&str>| {
        let router = vllm_batch_api::router(state(insecure));
        let peer: SocketAddr = peer.parse().unwrap();
        let mut req = axum::http::Request::get("/v1/batches");
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        async move { router.oneshot(req).await.unwrap().status().as_u16() }
    };
    let call = |insecure: bool, peer: &str| call_with_host(insecure, peer, Some("127.0.0.1:8080"));
    assert_eq!(call(false, "127.0.0.1:5000").await, 200);
    assert_eq!(call(false, "[::1]:5000").await, 200);
    assert_eq!(call(false, "[::ffff:127.0.0.1]:5000").await, 200, "IPv4-mapped loopback (a server on ::) is loopback");
    assert_eq!(call(false, "[::ffff:192.0.2.7]:5000").await, 401, "IPv4-mapped remote is remote");
    assert_eq!(call(false, "192.0.2.7:5000").await, 401, "a remote peer without keys is refused");
    assert_eq!(call(true, "192.0.2.7:5000").await, 200, "--insecure-no-auth serves it");
    assert_eq!(call_with_host(false, "127.0.0.1:5000", None).await, 200, "no Host header names no foreign site");
    assert_eq!(
        call_with_host(false, "127.0.0.1:5000", Some("attacker.example:8080")).await,
        403,
        "a loopback peer addressed by a foreign name (DNS rebinding) is refused"
    );
}
