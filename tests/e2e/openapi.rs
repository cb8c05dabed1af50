//! The OpenAPI document at `/openapi.json`: a valid OpenAPI 3.1 document (checked by the Python
//! `openapi-spec-validator`, from `.venv-test`), and every live answer of every endpoint — success
//! and error alike — matches the schema the document declares for its path, method and status
//! code (checked with the `jsonschema` crate, draft 2020-12). An answer whose status or media type
//! the document does not declare fails the test, and so does an operation no test called.

use std::collections::BTreeSet;
use std::sync::Mutex;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

/// A live answer: status, media type (without parameters) and body — parsed when JSON, else text.
struct Live {
    status: u16,
    media_type: String,
    body: Value,
}

/// The document, and which operations the test has called.
struct Spec {
    doc: Value,
    client: Client,
    called: Mutex<BTreeSet<(String, String)>>,
}

impl Spec {
    async fn fetch(client: &Client) -> Spec {
        let a = client.get("/openapi.json").await;
        assert_eq!(a.status, 200, "{}", a.body);
        let media_type = a.headers[reqwest::header::CONTENT_TYPE].to_str().unwrap();
        assert!(media_type.starts_with("application/json"), "{media_type}");
        Spec { doc: a.body, client: client.clone(), called: Mutex::new(BTreeSet::new()) }
    }

    /// Calls `method path_template` (with `{…}` filled in as `path`) and checks the answer
    /// against the document; returns it for the test's own assertions.
    async fn call(&self, method: Method, template: &str, path: &str, body: Option<Body>) -> Live {
        let mut req = self.client.http.request(method.clone(), self.client.url(path));
        req = match body {
            None => req,
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Raw(content_type, bytes)) => req.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes),
            Some(Body::Form(form)) => req.multipart(form),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().trim().to_string())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let body = if media_type == "application/json" {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: invalid JSON ({e}): {text}"))
        } else {
            Value::String(text)
        };
        let live = Live { status, media_type, body };
        self.check(&method, template, path, &live);
        live
    }

    async fn get(&self, template: &str, path: &str) -> Live {
        self.call(Method::GET, template, path, None).await
    }

    async fn post(&self, template: &str, path: &str, body: Value) -> Live {
        self.call(Method::POST, template, path, Some(Body::Json(body))).await
    }

    async fn upload(&self, content: &[u8], purpose: Option<&str>) -> Live {
        let mut form = reqwest::multipart::Form::new();
        if let Some(p) = purpose {
            form = form.text("purpose", p.to_string());
        }
        form = form.part("file", reqwest::multipart::Part::bytes(content.to_vec()).file_name("input.jsonl"));
        self.call(Method::POST, "/v1/files", "/v1/files", Some(Body::Form(form))).await
    }

    /// The operation object of `method template`.
    fn operation(&self, method: &Method, template: &str) -> &Value {
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "the document has no operation {method} {template}");
        op
    }

    fn check(&self, method: &Method, template: &str, path: &str, live: &Live) {
        self.called.lock().unwrap().insert((method.as_str().to_lowercase(), template.to_string()));
        let what = format!("{method} {path} → {}", live.status);
        let response = &self.operation(method, template)["responses"][live.status.to_string()];
        assert!(response.is_object(), "{what}: the document declares no {} response; body: {}", live.status, live.body);
        let content = &response["content"];
        let declared: Vec<&String> = content.as_object().map(|c| c.keys().collect()).unwrap_or_default();
        let media = &content[&live.media_type];
        assert!(media.is_object(), "{what}: answered {:?}, the document declares {declared:?}", live.media_type);
        let errors = self.errors(&media["schema"], &live.body);
        assert!(
            errors.is_empty(),
            "{what}: the body does not match its schema:\n{}\nbody: {:#}",
            errors.join("\n"),
            live.body
        );
    }

    /// Draft 2020-12 validation of `instance` against `schema`, whose `$ref`s point into the
    /// document's `components`.
    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema {schema} compiles: {e}"));
        validator.iter_errors(instance).map(|e| format!("  at {:?}: {e}", e.instance_path().as_str())).collect()
    }

    fn component(&self, name: &str) -> &Value {
        let schema = &self.doc["components"]["schemas"][name];
        assert!(schema.is_object(), "no component schema {name}");
        schema
    }

    /// The converse of schema validation: the object has no key the schema does not declare,
    /// and the schema requires exactly the keys the server always sends.
    fn same_keys(&self, name: &str, object: &Value) {
        let schema = self.component(name);
        let declared: BTreeSet<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let required: BTreeSet<&str> =
            schema["required"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        let live: BTreeSet<&str> = object.as_object().unwrap().keys().map(String::as_str).collect();
        let undeclared: Vec<_> = live.difference(&declared).collect();
        assert!(undeclared.is_empty(), "{name}: keys the schema does not declare: {undeclared:?} in {object}");
        assert_eq!(required, live, "{name}: `required` differs from the keys the server sends: {object}");
    }

    /// Every operation of the document was called at least once.
    fn assert_all_called(&self) {
        let called = self.called.lock().unwrap();
        let mut missing = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let key = (method.clone(), path.clone());
                if !called.contains(&key) {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
        assert!(missing.is_empty(), "operations no test called: {missing:?}");
    }
}

enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
    Form(reqwest::multipart::Form),
}

/// `python -m openapi_spec_validator` from the test venv on the served document.
async fn validate_with_openapi_spec_validator(doc: &Value) {
    let python = test_python();
    let hint = "run `tests/run.sh` (it installs tests/sdk/requirements.txt, openapi-spec-validator included, \
                into .venv-test), or set VLLM_BATCH_TEST_PYTHON to a python that has it";
    assert!(python.exists(), "no Python at {}; {hint}", python.display());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = tokio::process::Command::new(&python)
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} does not run: {e}; {hint}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named openapi_spec_validator"),
        "{} lacks openapi-spec-validator; {hint}",
        python.display()
    );
    assert!(out.status.success(), "openapi-spec-validator rejects the document:\n{stdout}\n{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
}

fn id_of(live: &Live) -> String {
    live.body["id"].as_str().unwrap_or_else(|| panic!("no id in {}", live.body)).to_string()
}

const UNKNOWN_FILE: &str = "file-0123456789abcdef0123456789abcdef";
const UNKNOWN_BATCH: &str = "batch_0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_is_valid_openapi_and_every_answer_matches_it() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--max-upload-bytes", "65536"]);
    let spec = Spec::fetch(&app.client).await;
    let doc = &spec.doc;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "vllm-batch");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    validate_with_openapi_spec_validator(doc).await;
    insta::assert_json_snapshot!("openapi_document", doc, { ".info.version" => "[version]" });
    spec.get("/openapi.json", "/openapi.json").await;

    // Files: upload, with each way an upload is refused.
    let input = spec.upload(chat_lines(3).as_bytes(), Some("batch")).await;
    assert_eq!(input.status, 200);
    spec.same_keys("FileObject", &input.body);
    let input_id = id_of(&input);
    let spare = spec.upload(b"{}\n", Some("user_data")).await;
    assert_eq!(spare.status, 200);
    let spare_id = id_of(&spare);
    assert_eq!(spec.upload(b"x", None).await.status, 400);
    assert_eq!(spec.upload(b"x", Some("homework")).await.status, 400);
    assert_eq!(spec.upload(&vec![b'x'; 70_000], Some("batch")).await.status, 413);
    let not_multipart = Body::Raw("application/json", b"{}".to_vec());
    assert_eq!(spec.call(Method::POST, "/v1/files", "/v1/files", Some(not_multipart)).await.status, 400);

    // Files: list with pagination, get, content; bad queries and unknown ids.
    let all = spec.get("/v1/files", "/v1/files").await;
    assert_eq!(all.status, 200);
    for file in all.body["data"].as_array().unwrap() {
        spec.same_keys("FileObject", file);
    }
    let page = spec.get("/v1/files", "/v1/files?limit=1&order=asc&purpose=batch").await;
    assert_eq!((page.status, &page.body["first_id"]), (200, &json!(input_id)));
    let page = spec.get("/v1/files", "/v1/files?limit=1").await;
    assert_eq!(page.body["has_more"], true, "{}", page.body);
    let after = page.body["last_id"].as_str().unwrap();
    let next = spec.get("/v1/files", &format!("/v1/files?limit=1&after={after}")).await;
    assert_eq!((next.status, next.body["data"].as_array().unwrap().len()), (200, 1));
    for bad in ["limit=0", "limit=10001", "limit=ten", "order=sideways", "after=file-nope"] {
        assert_eq!(spec.get("/v1/files", &format!("/v1/files?{bad}")).await.status, 400, "{bad}");
    }
    let file = spec.get("/v1/files/{file_id}", &format!("/v1/files/{input_id}")).await;
    assert_eq!(file.status, 200);
    spec.same_keys("FileObject", &file.body);
    assert_eq!(spec.get("/v1/files/{file_id}", &format!("/v1/files/{UNKNOWN_FILE}")).await.status, 404);
    assert_eq!(spec.get("/v1/files/{file_id}", "/v1/files/not-an-id").await.status, 404);
    let content = spec.get("/v1/files/{file_id}/content", &format!("/v1/files/{input_id}/content")).await;
    assert_eq!((content.status, content.media_type.as_str()), (200, "application/octet-stream"));
    assert_eq!(content.body, json!(chat_lines(3)));
    let missing = spec.get("/v1/files/{file_id}/content", &format!("/v1/files/{UNKNOWN_FILE}/content")).await;
    assert_eq!(missing.status, 404);

    // Batches: create (every optional field set), run to completion, and one that fails validation.
    let created = spec
        .post(
            "/v1/batches",
            "/v1/batches",
            json!({
                "input_file_id": input_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"job": "openapi"},
                "output_expires_after": {"anchor": "created_at", "seconds": 3600},
            }),
        )
        .await;
    assert_eq!(created.status, 200);
    spec.same_keys("Batch", &created.body);
    let batch_id = id_of(&created);
    app.client.wait_terminal(&batch_id, MINUTE).await;
    let done = spec.get("/v1/batches/{batch_id}", &format!("/v1/batches/{batch_id}")).await;
    assert_eq!((done.status, &done.body["status"]), (200, &json!("completed")), "{}", done.body);
    spec.same_keys("Batch", &done.body);
    let output_id = done.body["output_file_id"].as_str().unwrap();
    let output = spec.get("/v1/files/{file_id}", &format!("/v1/files/{output_id}")).await;
    assert_eq!((output.status, &output.body["purpose"]), (200, &json!("batch_output")));
    spec.same_keys("FileObject", &output.body);

    let bad_lines = spec.upload(b"{\"custom_id\": \"x\", oops\n", Some("batch")).await;
    let failing = app.client.create_batch(&id_of(&bad_lines), "/v1/chat/completions", "1h").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.client.wait_terminal(&failing, MINUTE).await;
    let failed = spec.get("/v1/batches/{batch_id}", &format!("/v1/batches/{failing}")).await;
    assert_eq!(failed.body["status"], "failed", "{}", failed.body);
    assert!(failed.body["errors"]["data"].as_array().is_some_and(|d| !d.is_empty()), "{}", failed.body);
    spec.same_keys("Batch", &failed.body);

    // Batches: list with pagination; bad queries; unknown ids; cancelling an ended batch.
    let all = spec.get("/v1/batches", "/v1/batches").await;
    assert_eq!((all.status, all.body["data"].as_array().unwrap().len()), (200, 2));
    for batch in all.body["data"].as_array().unwrap() {
        spec.same_keys("Batch", batch);
    }
    let page = spec.get("/v1/batches", "/v1/batches?limit=1").await;
    assert_eq!(page.body["has_more"], true, "{}", page.body);
    let after = page.body["last_id"].as_str().unwrap();
    let next = spec.get("/v1/batches", &format!("/v1/batches?limit=1&after={after}")).await;
    assert_eq!((next.status, &next.body["has_more"]), (200, &json!(false)), "{}", next.body);
    for bad in ["limit=0", "limit=101", "after=batch_nope"] {
        assert_eq!(spec.get("/v1/batches", &format!("/v1/batches?{bad}")).await.status, 400, "{bad}");
    }
    assert_eq!(spec.get("/v1/batches/{batch_id}", &format!("/v1/batches/{UNKNOWN_BATCH}")).await.status, 404);
    let cancel = "/v1/batches/{batch_id}/cancel";
    assert_eq!(spec.post(cancel, &format!("/v1/batches/{UNKNOWN_BATCH}/cancel"), json!({})).await.status, 404);
    assert_eq!(spec.post(cancel, &format!("/v1/batches/{batch_id}/cancel"), json!({})).await.status, 409);
    // Retry: an unknown batch, a malformed body, a batch with nothing to retry.
    let retry = "/v1/batches/{batch_id}/retry";
    assert_eq!(spec.post(retry, &format!("/v1/batches/{UNKNOWN_BATCH}/retry"), json!({})).await.status, 404);
    let bad = json!({"include_invalid_requests": "yes"});
    assert_eq!(spec.post(retry, &format!("/v1/batches/{batch_id}/retry"), bad).await.status, 400);
    assert_eq!(spec.post(retry, &format!("/v1/batches/{batch_id}/retry"), json!({})).await.status, 409);
    // Results so far (here: the ended batch's whole files); a bad cursor; an unknown batch.
    for kind in ["output", "errors"] {
        let template = format!("/v1/batches/{{batch_id}}/{kind}");
        let so_far = spec.get(&template, &format!("/v1/batches/{batch_id}/{kind}")).await;
        assert_eq!((so_far.status, so_far.media_type.as_str()), (200, "application/jsonl"));
        assert_eq!(spec.get(&template, &format!("/v1/batches/{batch_id}/{kind}?after=x")).await.status, 400);
        assert_eq!(spec.get(&template, &format!("/v1/batches/{UNKNOWN_BATCH}/{kind}")).await.status, 404);
    }

    // Create: the request schema and the server agree. With a well-formed id of no file, a body
    // the schema accepts gets past every check to the 404; one it refuses is a 400.
    let create_schema =
        &spec.operation(&Method::POST, "/v1/batches")["requestBody"]["content"]["application/json"]["schema"];
    let base = json!({"input_file_id": UNKNOWN_FILE, "endpoint": "/v1/embeddings", "completion_window": "24h"});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let mut bodies =
        vec![base.clone(), with("input_file_id", json!("file-nope")), with("endpoint", json!("/v1/images"))];
    for window in
        ["1h", "30m", "90s", "7d", "30d", "720h", "43200m", "999999s", "0h", "31d", "721h", "43201m", "1w", "24", ""]
    {
        bodies.push(with("completion_window", json!(window)));
    }
    let pairs = |n: usize, key_len: usize, value_len: usize| -> Value {
        (0..n)
            .map(|i| (format!("{i:0>key_len$}"), json!("v".repeat(value_len))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    for metadata in
        [Value::Null, pairs(16, 2, 1), pairs(17, 2, 1), pairs(1, 64, 512), pairs(1, 65, 1), pairs(1, 1, 513)]
    {
        bodies.push(with("metadata", metadata));
    }
    for (anchor, seconds) in
        [("created_at", 3600), ("created_at", 2_592_000), ("created_at", 3599), ("updated_at", 3600)]
    {
        bodies.push(with("output_expires_after", json!({"anchor": anchor, "seconds": seconds})));
    }
    bodies.push(with("output_expires_after", Value::Null));
    bodies.push(json!({"endpoint": "/v1/embeddings", "completion_window": "24h"}));
    for body in bodies {
        let valid = spec.errors(create_schema, &body).is_empty();
        let live = spec.post("/v1/batches", "/v1/batches", body.clone()).await;
        assert_eq!(
            live.status,
            if valid { 404 } else { 400 },
            "schema-valid: {valid}; body {body}; answer {}",
            live.body
        );
    }
    let malformed = Body::Raw("application/json", b"{\"input_file_id\": ".to_vec());
    assert_eq!(spec.call(Method::POST, "/v1/batches", "/v1/batches", Some(malformed)).await.status, 400);

    // Deleting a file: the object, then 404.
    let deleted = spec.call(Method::DELETE, "/v1/files/{file_id}", &format!("/v1/files/{spare_id}"), None).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body, json!({"id": spare_id, "object": "file", "deleted": true}));
    spec.same_keys("DeletedFile", &deleted.body);
    let again = spec.call(Method::DELETE, "/v1/files/{file_id}", &format!("/v1/files/{spare_id}"), None).await;
    assert_eq!(again.status, 404);

    // Webhook endpoints: create (the secret shown), read, list, update, rotate, a test to a
    // receiver that cannot be reached (502), delete; the event types.
    let hooks = "/v1/webhook_endpoints";
    let endpoint = json!({"name": "n", "url": "https://127.0.0.1:9/hook", "event_types": ["batch.completed"]});
    let created = spec.post(hooks, hooks, endpoint).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let hook_id = created.body["id"].as_str().unwrap().to_string();
    let http = json!({"name": "n", "url": "http://127.0.0.1:9/hook", "event_types": ["batch.completed"]});
    assert_eq!(spec.post(hooks, hooks, http).await.status, 400);
    assert_eq!(spec.get(hooks, &format!("{hooks}?limit=1")).await.body["data"][0]["id"], hook_id.as_str());
    let one = "/v1/webhook_endpoints/{webhook_endpoint_id}";
    let read = spec.get(one, &format!("{hooks}/{hook_id}")).await;
    spec.same_keys("WebhookEndpoint", &read.body);
    assert_eq!(spec.get(one, &format!("{hooks}/we_none")).await.status, 404);
    let renamed = spec.post(one, &format!("{hooks}/{hook_id}"), json!({"name": "m"})).await;
    assert_eq!(renamed.body["name"], "m", "{}", renamed.body);
    let rotate = "/v1/webhook_endpoints/{webhook_endpoint_id}/rotate_secret";
    assert_eq!(spec.post(rotate, &format!("{hooks}/{hook_id}/rotate_secret"), json!({})).await.status, 200);
    let test = "/v1/webhook_endpoints/{webhook_endpoint_id}/test";
    let unreachable = spec.post(test, &format!("{hooks}/{hook_id}/test"), json!({"event_type": "batch.failed"})).await;
    assert_eq!(unreachable.status, 502, "{}", unreachable.body);
    let types = spec.get("/v1/webhook_event_types", "/v1/webhook_event_types").await;
    assert_eq!(types.body["data"].as_array().unwrap().len(), 4);
    assert_eq!(spec.call(Method::DELETE, one, &format!("{hooks}/{hook_id}"), None).await.status, 200);
    assert_eq!(spec.call(Method::DELETE, one, &format!("{hooks}/{hook_id}"), None).await.status, 404);

    // Models, health, readiness, metrics.
    let models = spec.get("/v1/models", "/v1/models").await;
    assert_eq!((models.status, &models.body["data"][0]["id"]), (200, &json!(MODEL)));
    assert_eq!(spec.get("/health", "/health").await.body, json!({"status": "ok"}));
    let verbose = spec.get("/health", "/health?verbose=1").await;
    assert_eq!(verbose.body["upstreams"][0]["status"], "up", "{}", verbose.body);
    assert_eq!(spec.get("/v1/health", "/v1/health").await.status, 200);
    assert_eq!(spec.get("/ready", "/ready").await.body["status"], "ready");
    let metrics = spec.get("/metrics", "/metrics").await;
    assert_eq!((metrics.status, metrics.media_type.as_str()), (200, "text/plain"));

    spec.assert_all_called();
}

/// Cancelling a running batch (a slow upstream keeps it running), a 409 for deleting the input
/// file of a running batch, and the upstream going away: 502 from `/v1/models`, 503 from `/ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_conflicts_and_upstream_failures_match_the_document() {
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 200, ..SimConfig::default() }).await;
    let app = serve(&sim, &[]);
    let spec = Spec::fetch(&app.client).await;

    let input = app.client.upload(&chat_lines(40)).await;
    let batch_id =
        app.client.create_batch(&input, "/v1/chat/completions", "24h").await["id"].as_str().unwrap().to_string();
    app.client.wait_until(&batch_id, MINUTE, |b| b["status"] == "in_progress").await;
    let busy = spec.call(Method::DELETE, "/v1/files/{file_id}", &format!("/v1/files/{input}"), None).await;
    assert_eq!(busy.status, 409, "{}", busy.body);

    let cancel = "/v1/batches/{batch_id}/cancel";
    let cancelling = spec.post(cancel, &format!("/v1/batches/{batch_id}/cancel"), json!({})).await;
    assert_eq!((cancelling.status, &cancelling.body["status"]), (200, &json!("cancelling")), "{}", cancelling.body);
    spec.same_keys("Batch", &cancelling.body);
    let again = spec.post(cancel, &format!("/v1/batches/{batch_id}/cancel"), json!({})).await;
    assert_eq!(again.status, 200, "{}", again.body);
    app.client.wait_terminal(&batch_id, MINUTE).await;
    let cancelled = spec.get("/v1/batches/{batch_id}", &format!("/v1/batches/{batch_id}")).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.body);
    spec.same_keys("Batch", &cancelled.body);
    // Its cancelled lines can run again as a new batch.
    let retried = spec.post("/v1/batches/{batch_id}/retry", &format!("/v1/batches/{batch_id}/retry"), json!({})).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    spec.same_keys("Batch", &retried.body);

    sim.shutdown().await;
    // The last known model list is kept while the upstream is away.
    let models = spec.get("/v1/models", "/v1/models").await;
    assert_eq!(models.status, 200, "{}", models.body);
    let ready = spec.get("/ready", "/ready").await;
    assert_eq!(ready.status, 200, "a down upstream does not make the API unready: {}", ready.body);
    assert_eq!(ready.body["upstreams"][0]["status"], "down", "{}", ready.body);
    let verbose = spec.get("/v1/health", "/v1/health").await;
    assert_eq!(verbose.body["upstreams"][0]["status"], "down", "{}", verbose.body);

    // An upstream that never answered: 502 from `/v1/models`.
    let other = default_sim().await;
    let dead = serve(&other, &["--upstream", "http://127.0.0.1:9/v1"]);
    let models = Spec::fetch(&dead.client).await.get("/v1/models", "/v1/models").await;
    assert_eq!(models.status, 502, "{}", models.body);
}
