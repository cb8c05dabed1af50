//! Fuzzes `POST /v1/files`: arbitrary bytes as the multipart body (fixed boundary), through the
//! real axum router in-process, over a real SQLite store and a local file store in a temp dir.
//!
//! Checked for every input: no panic; the answer is 200, 400 or 413 with a JSON body (a File
//! object or OpenAI's error envelope); an accepted upload has its body on disk with the size
//! the row claims; and once that upload is deleted again, no body, temporary file or row is left
//! — so a refused or half-parsed upload can never leave a stored body without a row.

#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tower::ServiceExt;
use vllm_batch_api::{ApiLimits, AppState};
use vllm_batch_metrics::gpu::GpuSampler;
use vllm_batch_store::{LocalFileStore, SqlStore};
use vllm_batch_upstream::{parse_upstreams, Upstreams};

const BOUNDARY: &str = "fuzzboundary";
/// Small, so the fuzzer reaches the 413 path too.
const MAX_UPLOAD_BYTES: u64 = 4096;

struct Harness {
    rt: Runtime,
    app: Router,
    /// Root of the `LocalFileStore`: bodies under `files/`, temporaries under `tmp/`.
    files_root: PathBuf,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        // Prefer memory-backed storage: every accepted upload fsyncs.
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm"),
            false => tempfile::tempdir(),
        }
        .expect("temp dir");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let files_root = dir.path().join("files");
        let app = rt.block_on(async {
            let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
            let store = SqlStore::connect(&url, &Default::default()).await.expect("sqlite opens");
            vllm_batch_store::Store::migrate(&store).await.expect("migrations apply");
            let files = LocalFileStore::open(&files_root).await.expect("file store opens");
            // Nothing listens on port 9 (discard): the upstream is never reached by uploads.
            let upstreams = Upstreams::new(parse_upstreams("http://127.0.0.1:9/v1").expect("upstream"), None);
            let state = AppState {
                store: Arc::new(store),
                files: Arc::new(files),
                upstreams,
                limits: ApiLimits { max_upload_bytes: MAX_UPLOAD_BYTES, ..ApiLimits::default() },
                wake: Arc::new(Notify::new()),
                gpus: GpuSampler::disabled(),
                started: Instant::now(),
                prometheus_url: None,
                // No key exists and the caller is on loopback: answered as an anonymous admin.
                auth: Arc::default(),
                batch_cache: Arc::default(),
                disk: vllm_batch_store::DiskGuard::off(),
                webhooks: vllm_batch_api::WebhookSettings::default(),
            };
            vllm_batch_api::router(state)
        });
        Harness { rt, app, files_root, _dir: dir }
    })
}

/// Sends one request through the router as a loopback client; returns status and JSON body.
async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let mut req = req.body(Body::from(body)).expect("request");
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let resp = app.clone().oneshot(req).await.expect("the router is infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("response body").to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status} answered with a body that is not JSON ({e}): {bytes:?}"));
    (status, json)
}

fn entries(dir: PathBuf) -> Vec<String> {
    match std::fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.rt.block_on(async {
        let ct = format!("multipart/form-data; boundary={BOUNDARY}");
        let (status, body) = call(&h.app, Method::POST, "/v1/files", Some(&ct), data.to_vec()).await;
        match status.as_u16() {
            200 => {
                let id = body["id"].as_str().expect("a File object has an id").to_string();
                let bytes = body["bytes"].as_u64().expect("a File object has bytes");
                assert!(bytes <= MAX_UPLOAD_BYTES);
                let filename = body["filename"].as_str().expect("a File object has a filename");
                assert!(!filename.is_empty() && !filename.contains(['/', '\\']), "unsafe filename {filename:?}");
                assert!(!filename.chars().any(char::is_control), "control characters in {filename:?}");
                let on_disk = std::fs::metadata(h.files_root.join("files").join(&id)).expect("body stored").len();
                assert_eq!(on_disk, bytes, "the row's size is the stored body's");
                let (del, _) = call(&h.app, Method::DELETE, &format!("/v1/files/{id}"), None, Vec::new()).await;
                assert_eq!(del, StatusCode::OK, "deleting the upload");
            }
            400 | 413 => {
                let e = &body["error"];
                assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {body}");
                assert!(e["type"].is_string(), "error without a type: {body}");
            }
            other => panic!("POST /v1/files answered {other}: {body}"),
        }
        // Nothing is left behind: no body, no temporary file, no row.
        assert_eq!(entries(h.files_root.join("files")), Vec::<String>::new(), "bodies left (status {status})");
        assert_eq!(entries(h.files_root.join("tmp")), Vec::<String>::new(), "temporary files left");
        let (list, page) = call(&h.app, Method::GET, "/v1/files?limit=10", None, Vec::new()).await;
        assert_eq!(list, StatusCode::OK);
        assert_eq!(page["data"], Value::Array(Vec::new()), "rows left (status {status})");
    });
});
