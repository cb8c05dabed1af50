//! Webhooks end to end: endpoints managed over HTTP (and by the official Python SDK,
//! `tests/sdk/webhooks_flow.py`), `batch.*` events delivered to receivers started here,
//! signatures checked by the SDK's own `client.webhooks.unwrap`, retries that keep their
//! `webhook-id`, owners' isolation, and a delivery that survives `kill -9`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::auth::create_key;
use crate::support::*;

/// A signing secret for the operator endpoint (`whsec_` + base64 of 32 bytes).
const OPERATOR_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// One request a receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    fn event(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: records every request and answers the scripted statuses
/// in turn, then `fallback`.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    fallback: Arc<Mutex<u16>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap(), script).await
    }

    async fn start_on(addr: SocketAddr, script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let r = Receiver {
            url,
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            fallback: Arc::new(Mutex::new(200)),
        };
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let r = state.clone();
                async move {
                    let answered = r.script.lock().unwrap().pop_front().unwrap_or(*r.fallback.lock().unwrap());
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    r.got.lock().unwrap().push(Received { headers, body, answered });
                    StatusCode::from_u16(answered).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received.
    async fn wait(&self, within: Duration, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "receiver: {what} not within {within:?}; got {got:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `serve` with webhooks over plain HTTP allowed and a short retry schedule (`base_ms`).
fn serve_webhooks(sim: &SimHandle, dir: &Path, base_ms: &str, extra: &[&str]) -> Proc {
    let upstream = sim.base_url();
    let mut args: Vec<&str> = vec!["--upstream", &upstream, "--webhook-allow-http"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    Proc::start_with_env("serve", dir, &args, &[("VLLM_BATCH_TEST_WEBHOOK_RETRY_BASE_MS", base_ms)])
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs every received request through the official SDK's `client.webhooks.unwrap` with
/// `secret` (each must be accepted and parse to its own type and id) and with a wrong secret
/// (each must be refused).
async fn sdk_verifies(got: &[Received], secret: &str) {
    let python = sdk_python().await;
    let requests: Vec<Value> = got.iter().map(|r| json!({"body": r.body, "headers": r.headers})).collect();
    let script = r#"
import json, sys
from openai import OpenAI, InvalidWebhookSignatureError
client = OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
secret, wrong = sys.argv[1], "whsec_" + "QUJD" * 11
for r in json.load(sys.stdin):
    headers = dict(r["headers"])
    event = client.webhooks.unwrap(r["body"], headers, secret=secret)
    sent = json.loads(r["body"])
    assert event.type == sent["type"] and event.id == sent["id"] and event.data.id == sent["data"]["id"], event
    try:
        client.webhooks.unwrap(r["body"], headers, secret=wrong)
        raise SystemExit("accepted with a wrong secret")
    except InvalidWebhookSignatureError:
        pass
    print("verified", event.type, event.data.id)
"#;
    let mut child = tokio::process::Command::new(python)
        .args(["-c", script, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(serde_json::to_string(&requests).unwrap().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the SDK refused an event:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("verified ")).count(), got.len(), "{stdout}");
}

async fn create_endpoint(c: &Client, url: &str, types: &[&str]) -> Value {
    let a = c.post("/v1/webhook_endpoints", json!({"name": "hook", "url": url, "event_types": types})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

const ALL_TYPES: [&str; 4] = ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"];

/// Completed, failed (validation), cancelled and expired batches of one owner reach that owner's
/// endpoint, shaped as OpenAI sends them and signed so that the SDK's `unwrap` accepts them;
/// another owner's endpoint gets none of them and cannot see the first owner's endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_events_reach_their_owners_endpoint_signed_for_the_sdk() {
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 50, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let alice_key = create_key(dir.path(), "alice", false);
    let bob_key = create_key(dir.path(), "bob", false);
    let admin_key = create_key(dir.path(), "root", true);
    let proc = serve_webhooks(&sim, dir.path(), "100", &[]);
    let base = proc.base.clone().unwrap();
    let (alice, bob, admin) = (
        Client::with_key(base.clone(), &alice_key),
        Client::with_key(base.clone(), &bob_key),
        Client::with_key(base, &admin_key),
    );
    let (rx_alice, rx_bob) = (Receiver::start(&[]).await, Receiver::start(&[]).await);
    let ep = create_endpoint(&alice, &rx_alice.url, &ALL_TYPES).await;
    let secret = ep["signing_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{ep}");
    create_endpoint(&bob, &rx_bob.url, &ALL_TYPES).await;
    let ep_id = ep["id"].as_str().unwrap();
    // Another owner's endpoint does not exist for bob; an admin sees it.
    error_of(&bob.get(&format!("/v1/webhook_endpoints/{ep_id}")).await, 404);
    error_of(&bob.delete(&format!("/v1/webhook_endpoints/{ep_id}")).await, 404);
    assert_eq!(admin.get(&format!("/v1/webhook_endpoints/{ep_id}")).await.status, 200);
    assert_eq!(bob.get("/v1/webhook_endpoints").await.body["data"].as_array().unwrap().len(), 1);

    let completed = alice.submit(&chat_lines(2)).await;
    let bad = alice.upload("{\"custom_id\": \"x\", oops\n").await;
    let failed = alice.create_batch(&bad, "/v1/chat/completions", "24h").await["id"].as_str().unwrap().to_string();
    let slow = alice.upload(&chat_lines(600)).await;
    let expired = alice.create_batch(&slow, "/v1/chat/completions", "2s").await["id"].as_str().unwrap().to_string();
    let cancelled = alice.create_batch(&slow, "/v1/chat/completions", "24h").await["id"].as_str().unwrap().to_string();
    assert_eq!(alice.post(&format!("/v1/batches/{cancelled}/cancel"), json!({})).await.status, 200);
    let mut expect = vec![];
    for (id, status) in
        [(&completed, "completed"), (&failed, "failed"), (&expired, "expired"), (&cancelled, "cancelled")]
    {
        let done = alice.wait_terminal(id, MINUTE).await;
        assert_eq!(done["status"], status, "{done}");
        expect.push((format!("batch.{status}"), id.clone()));
    }
    let got = rx_alice.wait(MINUTE, "four events", |g| g.len() >= 4).await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let e = r.event();
            assert_eq!(e["object"], "event", "{e}");
            assert!(e["id"].as_str().unwrap().starts_with("evt_"), "{e}");
            assert!(e["created_at"].is_i64(), "{e}");
            assert_eq!(e.as_object().unwrap().len(), 5, "only OpenAI's fields: {e}");
            assert!(r.header("webhook-id").starts_with("msg_"), "{r:?}");
            assert!(r.header("webhook-signature").starts_with("v1,"), "{r:?}");
            assert_eq!(r.header("content-type"), "application/json");
            (e["type"].as_str().unwrap().to_string(), e["data"]["id"].as_str().unwrap().to_string())
        })
        .collect();
    seen.sort();
    expect.sort();
    assert_eq!(seen, expect);
    sdk_verifies(&got, &secret).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx_alice.got().len(), 4, "each event once");
    assert!(rx_bob.got().is_empty(), "bob's endpoint got alice's events: {:?}", rx_bob.got());
}

/// A receiver that answers 500 three times and then 200 gets the same `webhook-id` on every
/// attempt, accepts it once, and is not called again; each attempt is counted. The endpoint
/// here is the operator's (`--webhook-url`), on a server without keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_same_webhook_id_until_it_accepts() {
    let sim = default_sim().await;
    let rx = Receiver::start(&[500, 500, 500]).await;
    let dir = tempfile::tempdir().unwrap();
    let proc =
        serve_webhooks(&sim, dir.path(), "100", &["--webhook-url", &rx.url, "--webhook-secret", OPERATOR_SECRET]);
    let c = proc.client();
    let listed = c.get("/v1/webhook_endpoints").await.body;
    assert_eq!(listed["data"][0]["id"], "we_operator", "{listed}");
    assert!(listed["data"][0].get("signing_secret").is_none(), "{listed}");
    let id = c.submit(&chat_lines(3)).await;
    assert_eq!(c.wait_terminal(&id, MINUTE).await["status"], "completed");
    let got = rx.wait(MINUTE, "an accepted attempt", |g| g.iter().any(|r| r.answered == 200)).await;
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 500, 500, 200]);
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert!(got.iter().all(|r| r.body == got[0].body), "the same event each time");
    assert_eq!(got[3].event()["data"]["id"], id.as_str());
    sdk_verifies(&got[3..], OPERATOR_SECRET).await;
    // Attempts are counted, and nothing is pending once delivered.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = c.http.get(c.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let series = |s: &str| sample(&page, &format!("vllm_webhook_deliveries_total{{status=\"{s}\"}}"));
        let pending = sample(&page, "vllm_webhook_pending_deliveries");
        if series("error") == Some(3.0) && series("delivered") == Some(1.0) && pending == Some(0.0) {
            assert_eq!(series("exhausted"), Some(0.0));
            break;
        }
        assert!(Instant::now() < deadline, "metrics: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len(), 4, "nothing after the accepted attempt");
}

/// The event is in the database with the batch's end: a server killed with `kill -9` before the
/// receiver accepted it delivers it after a restart, under the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_survives_kill_9_and_arrives_after_restart() {
    let sim = default_sim().await;
    let rx = Receiver::start(&[]).await;
    *rx.fallback.lock().unwrap() = 503;
    let dir = tempfile::tempdir().unwrap();
    // A short attempt timeout keeps the delivery's lease short, should the kill land mid-attempt.
    let flags = ["--webhook-url", rx.url.as_str(), "--webhook-secret", OPERATOR_SECRET, "--webhook-timeout", "2s"];
    let mut proc = serve_webhooks(&sim, dir.path(), "200", &flags);
    let c = proc.client();
    let id = c.submit(&chat_lines(2)).await;
    assert_eq!(c.wait_terminal(&id, MINUTE).await["status"], "completed");
    rx.wait(MINUTE, "two refused attempts", |g| g.len() >= 2).await;
    // Between attempts (the next is 400 ms after the second): nothing is held.
    tokio::time::sleep(Duration::from_millis(150)).await;
    proc.kill9();
    let before = rx.got();
    *rx.fallback.lock().unwrap() = 200;
    let again = serve_webhooks(&sim, dir.path(), "200", &flags);
    let got = rx.wait(MINUTE, "the delivery after the restart", |g| g.iter().any(|r| r.answered == 200)).await;
    assert!(got.len() > before.len());
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(got.iter().filter(|r| r.answered == 200).count(), 1);
    assert_eq!(got.last().unwrap().event()["data"]["id"], id.as_str());
    sdk_verifies(&got[got.len() - 1..], OPERATOR_SECRET).await;
    drop(again);
}

/// Plain-HTTP URLs need `--webhook-allow-http`; bad fields are 400s that name the field; the
/// operator flags are checked at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_input_is_checked_and_http_needs_the_flag() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let post = |body: Value| async move { c.post("/v1/webhook_endpoints", body).await };
    let e = error_of(
        &post(json!({"name": "n", "url": "http://127.0.0.1:9/hook", "event_types": ["batch.completed"]})).await,
        400,
    );
    assert_eq!(e["param"], "url");
    assert!(e["message"].as_str().unwrap().contains("--webhook-allow-http"), "{e}");
    let e = error_of(
        &post(json!({"name": "n", "url": "https://example.com/h", "event_types": ["response.completed"]})).await,
        400,
    );
    assert_eq!(e["param"], "event_types");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("response.completed") && message.contains("batch.expired"), "{e}");
    let e = error_of(&post(json!({"name": "n", "url": "https://example.com/h", "event_types": []})).await, 400);
    assert_eq!(e["param"], "event_types");
    let e = error_of(&post(json!({"url": "https://example.com/h", "event_types": ["batch.failed"]})).await, 400);
    assert_eq!(e["param"], "name");
    let ok = post(json!({"name": "n", "url": "https://example.com/h", "event_types": ["batch.failed"]})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let id = ok.body["id"].as_str().unwrap();
    let e = error_of(&c.post(&format!("/v1/webhook_endpoints/{id}"), json!({"url": "ftp://x/y"})).await, 400);
    assert_eq!(e["param"], "url");
    error_of(&c.get("/v1/webhook_endpoints/we_nope").await, 404);
    // Ids and cursors of another form never reach the database (PostgreSQL answers a NUL byte in
    // a text parameter with an error: schemathesis found the 500).
    error_of(&c.get("/v1/webhook_endpoints/we_x%00y").await, 404);
    error_of(&c.delete("/v1/webhook_endpoints/24%00h").await, 404);
    let e = error_of(&c.get("/v1/webhook_endpoints?after=24%00h").await, 400);
    assert_eq!(e["param"], "after", "{e}");
    let types = c.get("/v1/webhook_event_types").await.body;
    assert_eq!(types, json!({"object": "list", "data": ALL_TYPES}));

    // The operator flags: a URL without a secret, or a secret that is not `whsec_<base64>`.
    for (args, expect) in [
        (vec!["--webhook-url", "https://example.com/h"], "--webhook-url needs --webhook-secret"),
        (vec!["--webhook-url", "https://example.com/h", "--webhook-secret", "hunter2"], "whsec_"),
        (vec!["--webhook-url", "http://example.com/h", "--webhook-secret", OPERATOR_SECRET], "--webhook-allow-http"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = std::process::Command::new(BIN);
        use_test_database(&mut command, dir.path());
        let out = command.args(["serve", "--port", "0", "--data-dir"]).arg(dir.path()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

/// The official Python SDK manages endpoints (`client.webhooks.*`) and verifies what its
/// receiver gets (`tests/sdk/webhooks_flow.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_manages_endpoints_and_unwraps_events() {
    let python = sdk_python().await;
    // Slow enough that the flow's batch of 100 lines is still running when it cancels it.
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 100, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let proc = serve_webhooks(&sim, dir.path(), "100", &[]);
    let run = tokio::process::Command::new(python)
        .arg(repo_root().join("tests/sdk/webhooks_flow.py"))
        .current_dir(repo_root())
        .env("OPENAI_BASE_URL", format!("{}/v1", proc.base.as_ref().unwrap()))
        .env("OPENAI_API_KEY", "sk-vllm-batch-test")
        .env("SIM_MODEL", MODEL)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run).await.expect("the flow finished").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "the SDK webhooks flow failed:\n{stdout}\n{}\n--- server logs ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proc.logs().iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n")
    );
}
