//! File bodies in an S3-compatible object store: the real binary with `--object-store s3://…`
//! against a real S3 protocol server, s3s-fs (SigV4 signatures checked, multipart uploads, ranged
//! GETs), which keeps its buckets as folders. `tests/s3/install.sh` builds it and prints its path
//! for `VLLM_BATCH_TEST_S3_SERVER` (tests/run.sh sets it). Without that variable these tests skip
//! with the reason printed, except under `CI=true`, where they fail.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::ObjectStore;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use vllm_batch_store::object::PART_SIZE;

use crate::support::*;

const ACCESS_KEY: &str = "vllm-batch-test";
const SECRET_KEY: &str = "vllm-batch-test-secret";
const BUCKET: &str = "batches";
/// Every key of the server under test lives under this prefix of the bucket.
const PREFIX: &str = "team-a";

/// The S3 server's binary, or `None` (skip) outside CI when none was installed.
fn s3_server_binary() -> Option<PathBuf> {
    let hint =
        "run `bash tests/s3/install.sh` (tests/run.sh does) and set VLLM_BATCH_TEST_S3_SERVER to the path it prints";
    let in_ci = std::env::var("CI").as_deref() == Ok("true");
    match std::env::var_os("VLLM_BATCH_TEST_S3_SERVER") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "VLLM_BATCH_TEST_S3_SERVER={} is not a file; {hint}", path.display());
            Some(path)
        }
        None if in_ci => panic!("VLLM_BATCH_TEST_S3_SERVER is not set under CI=true; {hint}"),
        None => {
            // Straight to stderr: libtest would hide an `eprintln!` of a passing test.
            let _ = writeln!(std::io::stderr(), "skipping an S3 test: VLLM_BATCH_TEST_S3_SERVER is not set; {hint}");
            None
        }
    }
}

/// A running s3s-fs on a free port, with one bucket, `BUCKET`, in a temporary folder.
struct S3Server {
    child: Child,
    root: tempfile::TempDir,
    endpoint: String,
}

impl S3Server {
    fn start() -> Option<S3Server> {
        let bin = s3_server_binary()?;
        let root = tempfile::tempdir().unwrap();
        // s3s-fs keeps each bucket as a top-level folder of its root: this creates the bucket.
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .env("RUST_LOG", "s3s_fs=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", bin.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let endpoint = loop {
            let line = lines.next().expect("s3s-fs exited before listening").unwrap();
            if let Some((_, url)) = line.split_once("server is running at ") {
                break url.trim().to_string();
            }
        };
        // Keep reading its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Some(S3Server { child, root, endpoint })
    }

    fn object_store_url(&self) -> String {
        format!("s3://{BUCKET}/{PREFIX}")
    }

    /// `vllm-batch serve` with its file bodies in the bucket; its own folder holds only SQLite.
    fn serve(&self, sim: &SimHandle, extra: &[&str]) -> App {
        let dir = tempfile::tempdir().unwrap();
        let (upstream, url) = (sim.base_url(), self.object_store_url());
        let mut args = vec!["--upstream", &upstream, "--object-store", &url, "--s3-endpoint", &self.endpoint];
        args.extend_from_slice(FAST);
        args.extend_from_slice(extra);
        let proc = Proc::start_with_env("serve", dir.path(), &args, &credentials(SECRET_KEY));
        let client = proc.client();
        App { proc, dir, client }
    }

    /// A client of the bucket, as another S3 user would see it.
    fn bucket(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }

    /// Every key in the bucket, sorted.
    async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> =
            self.bucket().list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        keys.sort();
        keys
    }

    /// Multipart uploads in progress (s3s-fs keeps each as `.upload-<id>.json` in its root).
    fn uploads_in_progress(&self) -> usize {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".upload-"))
            .count()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials(secret: &str) -> [(&'static str, &str); 2] {
    [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", secret)]
}

fn key_of(file_id: &str) -> String {
    format!("{PREFIX}/files/{file_id}")
}

/// Announces a 100 MB upload and sends more than one part of it, leaving the connection open.
async fn start_large_upload(app: &App) -> TcpStream {
    let addr = app.proc.base.as_deref().unwrap().trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let boundary = "s3-test-boundary";
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: 100000000\r\n\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n\
         batch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(chat_lines_with(12, |_| format!(" {}", "y".repeat(PART_SIZE / 10))).as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    conn
}

/// Polls the async `check` every 50 ms until it holds; fails with `what` after 30 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_its_files_in_the_bucket() {
    let Some(s3) = S3Server::start() else { return };
    let sim =
        sim(SimConfig { faults: FaultRates { error_400: 0.2, ..FaultRates::default() }, ..SimConfig::default() }).await;
    let app = s3.serve(&sim, &["--chunk-size", "7"]);
    let c = &app.client;
    let n = 40;

    let input = chat_lines(n);
    let id = c.submit(&input).await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    let (out, err) = c.results(&done).await;
    let codes = check_exactly_once(&done, &out, &err, n);
    assert!(!out.is_empty() && codes.get("invalid_request").is_some_and(|&k| k > 0), "{codes:?}");

    // The bodies are objects of the bucket, and nothing else is: no chunk parts (removed once the
    // batch finalized), no readiness probe, nothing in the server's own folder.
    let (input_id, output_id, error_id) = (
        done["input_file_id"].as_str().unwrap(),
        done["output_file_id"].as_str().unwrap(),
        done["error_file_id"].as_str().unwrap(),
    );
    let mut expected = vec![key_of(input_id), key_of(output_id), key_of(error_id)];
    expected.sort();
    // The parts go just after the batch is marked completed.
    eventually("the bucket holds the batch's three files and nothing else", || async { s3.keys().await == expected })
        .await;
    assert!(!app.data_dir().join("files").exists(), "no local file folder with an object store");
    let stored = s3.bucket().get(&key_of(input_id).into()).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored, input.as_bytes(), "the input object is the uploaded file");
    let stored = s3.bucket().get(&key_of(output_id).into()).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored, c.content(output_id).await.as_bytes(), "the output object is what the API serves");

    // Deleting a file deletes its object.
    assert_eq!(c.delete(&format!("/v1/files/{output_id}")).await.status, 200);
    assert!(!s3.keys().await.contains(&key_of(output_id)));
    assert_eq!(c.get("/ready").await.status, 200);
}

/// Results while the batch runs come from the part objects in the bucket; once it has ended,
/// from the output and error objects, and everything read adds up to them byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_so_far_read_the_parts_in_the_bucket() {
    use crate::results::{custom_ids, final_file, Follower};
    let Some(s3) = S3Server::start() else { return };
    let sim = sim(SimConfig { max_num_seqs: 2, base_latency_ms: 250, ..SimConfig::default() }).await;
    let app = s3.serve(&sim, &["--chunk-size", "5", "--max-in-flight", "2", "--concurrency", "fixed"]);
    let c = &app.client;
    let id = c.submit(&chat_lines_with(40, |i| if i % 9 == 4 { " __sim_400__".into() } else { String::new() })).await;
    let (mut output, mut errors) = (Follower::new(c, &id, "output"), Follower::new(c, &id, "errors"));
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 15).await;
    let so_far = output.step(None).await;
    errors.step(None).await;
    assert_eq!(c.batch(&id).await["status"], "in_progress", "read while the batch ran");
    assert!(so_far.incomplete && custom_ids(&so_far.body).len() >= 5, "lines so far: {}", so_far.body);
    assert!(s3.keys().await.iter().any(|k| k.contains("/parts/")), "the parts are objects of the bucket");
    output.until_complete().await;
    errors.until_complete().await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(output.all, final_file(c, &done, "output_file_id").await);
    assert_eq!(errors.all, final_file(c, &done, "error_file_id").await);
    assert_eq!(custom_ids(&output.all).len() + custom_ids(&errors.all).len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_goes_up_in_parts_and_runs() {
    let Some(s3) = S3Server::start() else { return };
    let sim = default_sim().await;
    let app = s3.serve(&sim, &["--chunk-size", "10"]);
    let c = &app.client;

    // 80 requests of about 900 KB each: a 70 MiB file, and as large an output file (the sim
    // echoes each prompt).
    let n = 80;
    let pad = format!(" {}", "x".repeat(900_000));
    let input = chat_lines_with(n, |_| pad.clone());
    assert!(input.len() > 64 << 20, "{} bytes", input.len());
    let a = c.upload_raw(input.clone().into_bytes(), "big.jsonl", Some("batch")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["bytes"], input.len() as u64);
    let file_id = a.body["id"].as_str().unwrap().to_string();

    // The object came as a multipart upload of PART_SIZE parts: S3's ETag of such an object is
    // `<md5 of the parts' md5s>-<number of parts>`.
    let parts = input.len().div_ceil(PART_SIZE);
    let head = s3.bucket().head(&key_of(&file_id).into()).await.unwrap();
    assert_eq!(head.size, input.len() as u64);
    let etag = head.e_tag.unwrap();
    assert!(etag.trim_matches('"').ends_with(&format!("-{parts}")), "ETag {etag} of a {parts}-part upload");
    // Served back byte for byte.
    assert!(c.content(&file_id).await == input, "the downloaded file differs from the upload");

    // A batch over it: every chunk is a ranged read of the object, the output a multipart upload.
    let batch = c.create_batch(&file_id, "/v1/chat/completions", "24h").await;
    let done = c.wait_terminal(batch["id"].as_str().unwrap(), 3 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    let output = s3.bucket().head(&key_of(done["output_file_id"].as_str().unwrap()).into()).await.unwrap();
    assert!(output.size > (64 << 20) && output.e_tag.unwrap().contains('-'), "output uploaded in parts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_is_aborted() {
    let Some(s3) = S3Server::start() else { return };
    let sim = default_sim().await;
    let app = s3.serve(&sim, &[]);

    // A client announces a large upload, sends more than one part of it, and goes away.
    let conn = start_large_upload(&app).await;
    eventually("the upload is in progress on the S3 server", || async { s3.uploads_in_progress() == 1 }).await;
    drop(conn);

    eventually("the upload is aborted", || async { s3.uploads_in_progress() == 0 }).await;
    // Its marker (`uploads/…`) goes right after the abort.
    eventually("nothing stored under any key", || async { s3.keys().await.is_empty() }).await;
    assert_eq!(app.client.get("/v1/files").await.body["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_aborts_the_multipart_upload_of_a_killed_server() {
    let Some(s3) = S3Server::start() else { return };
    let sim = default_sim().await;
    let mut app = s3.serve(&sim, &["--gc-interval", "300ms"]);

    // An upload of more than one part is under way when the server is killed: S3 keeps the
    // parts of an upload nobody completes or aborts (and bills them), invisible to listings.
    let conn = start_large_upload(&app).await;
    let marker_prefix = format!("{PREFIX}/uploads/");
    eventually("the upload and its marker are in the bucket", || async {
        s3.uploads_in_progress() == 1 && s3.keys().await.iter().any(|k| k.starts_with(&marker_prefix))
    })
    .await;
    app.proc.kill9();
    drop(conn);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s3.uploads_in_progress(), 1, "nobody aborted it: its process is dead");
    let markers = s3.keys().await;
    assert_eq!(markers.len(), 1, "{markers:?}");

    // A fresh server's collector leaves an upload younger than a day alone…
    let upstream = sim.base_url();
    let url = s3.object_store_url();
    let mut args = vec!["--upstream", &upstream, "--object-store", &url, "--s3-endpoint", &s3.endpoint];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&["--gc-interval", "300ms"]);
    let restarted = Proc::start_with_env("serve", app.dir.path(), &args, &credentials(SECRET_KEY));
    let c = restarted.client();
    eventually("a collector pass ran", || async {
        let page = reqwest::get(c.url("/metrics")).await.unwrap().text().await.unwrap();
        sample(&page, "vllm_gc_last_run_timestamp_seconds").unwrap_or(0.0) > 0.0
    })
    .await;
    assert_eq!(s3.uploads_in_progress(), 1);
    // …and aborts it once its marker has sat idle for more than a day (s3s-fs reports a file's
    // modification time as the object's).
    let marker = s3.root.path().join(BUCKET).join(&markers[0]);
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options().write(true).open(&marker).unwrap().set_modified(two_days_ago).unwrap();
    eventually("the abandoned upload is aborted", || async { s3.uploads_in_progress() == 0 }).await;
    eventually("its marker is gone", || async { s3.keys().await.is_empty() }).await;
    let page = reqwest::get(c.url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(sample(&page, "vllm_gc_deleted_total{kind=\"upload\"}"), Some(1.0), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_stop_the_server() {
    let Some(s3) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--port", "0", "--object-store", &s3.object_store_url(), "--s3-endpoint", &s3.endpoint])
        .arg("--data-dir")
        .arg(dir.path())
        .envs(credentials("not-the-secret"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in ["opening file storage", "s3://batches/team-a", &s3.endpoint, "SignatureDoesNotMatch"] {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    assert_eq!(s3.keys().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_object_store_when_it_goes_away() {
    let Some(mut s3) = S3Server::start() else { return };
    let sim = default_sim().await;
    let app = s3.serve(&sim, &[]);
    assert_eq!(app.client.get("/ready").await.status, 200);

    s3.child.kill().unwrap();
    s3.child.wait().unwrap();
    let a = app.client.get("/ready").await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body["checks"]["file_store"]["status"], "failing", "{}", a.body);
    assert_eq!(a.body["checks"]["database"]["status"], "ok", "{}", a.body);
    let error = a.body["checks"]["file_store"]["error"].as_str().unwrap();
    assert!(error.contains(&s3.endpoint), "the error names the store: {error}");
}

/// Configuration errors need no S3 server: each stops the process with a message saying what
/// is wrong.
#[test]
fn bad_object_store_settings_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of the loopback.
    let unreachable = ["--object-store", "s3://bucket", "--s3-endpoint", "http://127.0.0.1:1"];
    let cases = [
        (&["--object-store", "gs://bucket"][..], "unsupported object store \"gs://bucket\""),
        (&["--object-store", "s3://"], "names no bucket"),
        (&["--object-store", "s3:///prefix"], "names no bucket"),
        (&unreachable, "s3://bucket at http://127.0.0.1:1 failed a probe write"),
    ];
    for (args, message) in cases {
        let out = Command::new(BIN)
            .args(["serve", "--port", "0"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .envs(credentials(SECRET_KEY))
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {message:?} not in: {stderr}");
    }
}

/// The multi-machine deployment: two API replicas and two workers, each with a data folder of
/// its own (nothing shared on disk), on one PostgreSQL database and one bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_api_replicas_and_workers_share_only_postgres_and_the_bucket() {
    let Some(base) = pg_base() else { return };
    let Some(s3) = S3Server::start() else { return };
    let sim = default_sim().await;
    let url = fresh_pg_database(&base);
    let (upstream, store) = (sim.base_url(), s3.object_store_url());
    let mut env = credentials(SECRET_KEY).to_vec();
    env.push(("DATABASE_URL", url.as_str()));
    let machine = || tempfile::tempdir().unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| machine()).collect();
    migrate(dirs[0].path(), &env);
    let common = ["--upstream", upstream.as_str(), "--object-store", store.as_str(), "--s3-endpoint", &s3.endpoint];
    let apis: Vec<Proc> = dirs[..2].iter().map(|d| Proc::start_with_env("api", d.path(), &common, &env)).collect();
    let mut worker_args = common.to_vec();
    worker_args.extend_from_slice(FAST);
    worker_args.extend_from_slice(&["--chunk-size", "250"]);
    let workers: Vec<Proc> =
        dirs[2..].iter().map(|d| Proc::start_with_env("worker", d.path(), &worker_args, &env)).collect();
    let n = 3_000;
    let file = apis[0].client().upload(&chat_lines(n)).await;
    let b = apis[1].client().create_batch(&file, "/v1/chat/completions", "24h").await;
    let id = b["id"].as_str().unwrap();
    let done = apis[0].client().wait_terminal(id, 3 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    let (out, err) = apis[1].client().results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    for d in &dirs {
        assert!(!d.path().join("files").exists(), "nothing stored on a machine's own disk");
    }
    let keys = s3.keys().await;
    for f in ["input_file_id", "output_file_id"] {
        assert!(keys.contains(&key_of(done[f].as_str().unwrap())), "{f} is in the bucket: {keys:?}");
    }
    for w in &workers {
        assert!(w.completed_requests().await > 0.0, "each worker did part of the batch");
    }
}
