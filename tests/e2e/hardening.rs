//! The hostile-input suite, part two: attacks on the server itself rather than on batch files —
//! oversized multipart heads, slow and silent connections, credentials in upstream URLs,
//! revocation of the last key, cursors naming another owner's objects, requests addressed to a
//! foreign `Host` or sent by a foreign `Origin`, and error answers outside OpenAI's envelope.
//! Each test drives the real binary over loopback sockets and ends by checking it still serves.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::{create_key, keys};
use crate::hostile::still_serves;
use crate::support::*;

/// A peak resident size the server stays under while refusing the oversized heads below
/// (it idles at ~40 MiB; before the part guard one 256 MiB head took it to ~800 MiB).
const RSS_BOUND_KIB: u64 = 160 * 1024;

/// `VmHWM` (peak resident size) of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// What a raw upload attempt saw: how much of its body the server took, and its answer.
struct Refusal {
    sent: usize,
    status: Option<u16>,
    body: String,
}

/// Sends an upload whose `file` part's head never ends (a `filename="aaaa…"` of `head_bytes`),
/// writing until the server stops reading, then reads its answer if one arrived.
async fn endless_head(base: &str, head_bytes: usize) -> Refusal {
    let addr = addr_of(base);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /v1/files HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary=b0und\r\n\
         Content-Length: {}\r\n\r\n--b0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"",
        head_bytes + 200
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < head_bytes {
        match tokio::time::timeout(Duration::from_secs(10), s.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            // Refused (reset / broken pipe), or the server stopped reading and the buffers filled.
            _ => break,
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok());
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Refusal { sent, status, body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_part_heads_and_fields_are_refused_in_bounded_memory() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--max-upload-bytes", "1048576"]);
    let c = &app.client;
    let base = app.proc.base.clone().unwrap();

    // One 256 MiB head, then four of 128 MiB at once.
    let one = endless_head(&base, 256 << 20).await;
    let four = futures_util::future::join_all((0..4).map(|_| endless_head(&base, 128 << 20))).await;
    for (i, r) in std::iter::once(&one).chain(&four).enumerate() {
        assert!(r.sent < 64 << 20, "attempt {i}: the server kept reading a head ({} bytes taken)", r.sent);
        // The answer is there unless the reset of the unread bytes overtook it.
        if let Some(status) = r.status {
            assert_eq!(status, 400, "attempt {i}: {}", r.body);
            assert!(r.body.contains("headers exceed 8192 bytes"), "attempt {i}: {}", r.body);
        }
    }
    assert!(one.status.is_some() || four.iter().any(|r| r.status.is_some()), "no refusal was answered at all");
    let peak = peak_rss_kib(app.proc.pid());
    eprintln!("peak RSS after one 256 MiB and four 128 MiB part heads: {:.1} MiB", peak as f64 / 1024.0);
    assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB while refusing oversized heads (bound {RSS_BOUND_KIB} KiB)");

    // A 50 MB field the form does not have, beside an 8-byte file.
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part("file", reqwest::multipart::Part::bytes(b"{\"a\":1}\n".to_vec()).file_name("a.jsonl"))
        .part("padding", reqwest::multipart::Part::bytes(vec![b'x'; 50_000_000]));
    let e = match c.http.post(c.url("/v1/files")).multipart(form).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            error_of(&Answer { status, body, headers: Default::default() }, 400)
        }
        // The server answered and closed before the client finished sending.
        Err(e) => panic!("the unknown field got no answer: {e}"),
    };
    assert!(e["message"].as_str().unwrap().contains("Unrecognized request argument supplied: padding"), "{e}");

    // A `purpose` longer than a small field may be.
    let e = error_of(&c.upload_raw(b"{}\n".to_vec(), "a.jsonl", Some(&"b".repeat(5000))).await, 400);
    assert!(e["message"].as_str().unwrap().contains("longer than 1024 bytes"), "{e}");
    // Two `file` parts.
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part("file", reqwest::multipart::Part::bytes(b"{}\n".to_vec()).file_name("a.jsonl"))
        .part("file", reqwest::multipart::Part::bytes(b"{}\n".to_vec()).file_name("b.jsonl"));
    let resp = c.http.post(c.url("/v1/files")).multipart(form).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // The file limit still holds for the file itself: 413.
    let e = error_of(&c.upload_raw(vec![b'{'; 1_100_000], "big.jsonl", Some("batch")).await, 413);
    assert_eq!(e["code"], "file_too_large");
    // The server's own purpose is not for uploads.
    let e = error_of(&c.upload_raw(b"{}\n".to_vec(), "a.jsonl", Some("batch_output")).await, 400);
    assert_eq!(e["param"], "purpose");

    // Nothing of any of it was stored, and the peak stayed bounded throughout.
    assert_eq!(c.get("/v1/files").await.body["data"], json!([]));
    assert!(std::fs::read_dir(app.data_dir().join("files/tmp")).map_or(0, |d| d.count()) == 0);
    let peak = peak_rss_kib(app.proc.pid());
    assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB (bound {RSS_BOUND_KIB} KiB)");
    still_serves(c).await;
}

/// Opens a connection that sends half a request head and stops.
async fn stalled(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    s
}

/// Waits until the server closes `s` (EOF or reset), or gives up after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed_and_health_keeps_answering() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--header-read-timeout", "2s", "--body-idle-timeout", "2s"]);
    let c = &app.client;
    let addr = addr_of(app.proc.base.as_ref().unwrap());

    // 300 connections that send half a head and go silent.
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(stalled(&addr).await);
    }
    let asked = Instant::now();
    assert_eq!(c.get("/health").await.status, 200, "/health answers beside 300 stalled connections");
    let health_took = asked.elapsed();
    // Each is closed by the server once the header timeout passes (the bound here is generous:
    // it only has to be finite, the timeout itself is 2 s).
    for (i, s) in held.iter_mut().enumerate() {
        assert!(closed_within(s, Duration::from_secs(30)).await, "stalled connection {i} still open");
    }
    eprintln!(
        "300 stalled connections: /health answered in {health_took:.1?} beside them; all closed {:.1?} after it",
        asked.elapsed()
    );

    // An idle kept-alive connection is closed too.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut first = [0u8; 15];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK");
    assert!(closed_within(&mut kept, Duration::from_secs(30)).await, "an idle keep-alive connection stays open");

    // An upload that keeps moving for longer than both timeouts is not cut.
    let line = chat_lines(1);
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let body = format!(
        "--b0und\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b0und\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"slow.jsonl\"\r\n\r\n{line}\r\n--b0und--\r\n"
    );
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary=b0und\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let pieces: Vec<&[u8]> = body.as_bytes().chunks(body.len().div_ceil(12)).collect();
    for piece in pieces {
        slow.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(started.elapsed() > Duration::from_secs(4), "the upload took longer than the timeouts");
    assert!(answer.starts_with("HTTP/1.1 200"), "a moving upload was cut: {answer}");

    // A body that stalls gets 408 in OpenAI's envelope, and leaves nothing behind.
    let mut stall = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary=b0und\r\n\
         Content-Length: 100000\r\n\r\n--b0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s\"\r\n\r\n{{"
    );
    stall.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stall.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"type\":\"invalid_request_error\""), "{answer}");
    let files = c.get("/v1/files").await.body["data"].as_array().unwrap().len();
    assert_eq!(files, 1, "only the moving upload is stored");
    still_serves(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_bound_queues_new_clients_instead_of_failing_them() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--max-connections", "20", "--header-read-timeout", "2s"]);
    let addr = addr_of(app.proc.base.as_ref().unwrap());
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(stalled(&addr).await);
    }
    // Every slot is taken by a silent client: a new client waits in the backlog, and is served
    // once the header timeout frees a slot.
    let health = tokio::time::timeout(Duration::from_secs(30), app.client.get("/health")).await;
    assert_eq!(health.expect("served once a slot frees").status, 200);
    assert!(
        app.proc.logs().iter().any(|l| l.contains("connection limit reached")),
        "the full server says so:\n{}",
        app.proc.logs().join("\n")
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_credentials_never_leave_the_server() {
    let sim = default_sim().await;
    let live = sim.base_url().replace("http://", "http://scott:tiger-pass@");
    // A second upstream that is down, with a token as its user and one in its query.
    let dead = "http://tok-secret-user@127.0.0.1:9/v1?api_key=query-secret";
    let upstreams = format!("{live},{dead}");
    let app = serve(&sim, &["--upstream", &upstreams]);
    let c = &app.client;
    let secrets = ["tiger-pass", "scott", "tok-secret-user", "query-secret"];
    let mut seen = Vec::new();
    for path in ["/v1/health", "/health?verbose=1", "/ready", "/v1/models", "/metrics", "/", "/openapi.json"] {
        let a = c.get(path).await;
        seen.push(format!("{path}: {}", a.body));
    }
    let verbose = c.get("/v1/health").await.body;
    assert_eq!(verbose["upstreams"][0]["status"], "up", "{verbose}");
    assert_eq!(verbose["upstreams"][1]["status"], "down", "{verbose}");
    assert!(verbose["upstreams"][0]["url"].as_str().unwrap().contains("***@127.0.0.1"), "{verbose}");

    // A batch through the live upstream (reqwest sends its userinfo as Basic auth).
    let id = c.submit(&chat_lines(3)).await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");

    // A server whose only upstream is down: its requests wait (they do not fail) and the batch
    // expires; the down upstream is named in health answers, readiness and a WARN line.
    let pinned = format!("{MODEL}={dead}");
    let down = serve(&sim, &["--upstream", &pinned]);
    let file = down.client.upload(&chat_lines(2)).await;
    let id = down.client.create_batch(&file, "/v1/chat/completions", "3s").await["id"].as_str().unwrap().to_string();
    let expired = down.client.wait_terminal(&id, MINUTE).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    let (_, err) = down.client.results(&expired).await;
    assert_eq!(err.len(), 2, "{expired}");
    seen.extend(err.iter().map(|l| l.to_string()));
    let ready = down.client.get("/ready").await.body;
    assert_eq!(ready["upstreams"][0]["status"], "down", "{ready}");
    assert!(ready["upstreams"][0]["error"].as_str().is_some_and(|e| e.contains("127.0.0.1:9")), "{ready}");
    seen.push(ready.to_string());
    seen.push(down.client.get("/v1/health").await.body.to_string());
    seen.push(down.client.get("/api/metrics/vllm").await.body.to_string());

    let logs: Vec<String> = app.proc.logs().into_iter().chain(down.proc.logs()).collect();
    assert!(logs.iter().any(|l| l.contains("***@127.0.0.1:9/v1")), "the down upstream is logged, redacted");
    for text in seen.iter().chain(&logs) {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} leaked in: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_only_key_leaves_the_server_closed() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let dir = app.data_dir();
    let anonymous = &app.client;
    assert_eq!(anonymous.get("/v1/files").await.status, 200, "keyless: loopback is served");

    // The first key closes the server at once: no window in which keyless requests still pass.
    let key = create_key(&dir, "solo", false);
    error_of(&anonymous.get("/v1/files").await, 401);
    let solo = Client::with_key(anonymous.base.clone(), &key);
    let file = solo.upload(&chat_lines(1)).await;

    let listed: Value = serde_json::from_str(&keys(&dir, &["list", "--json"])).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    keys(&dir, &["revoke", &id]);
    for wait in [0, 3] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        for (who, client) in [("no key", anonymous), ("the revoked key", &solo)] {
            for path in ["/v1/files".to_string(), format!("/v1/files/{file}"), "/v1/batches".into()] {
                let e = error_of(&client.get(&path).await, 401);
                assert_eq!(e["code"], "invalid_api_key", "{who} {path} after {wait} s");
            }
        }
    }
    assert_eq!(anonymous.get("/health").await.status, 200);
    // A new key opens it again for its holder only.
    let again = Client::with_key(anonymous.base.clone(), &create_key(&dir, "solo", false));
    assert_eq!(again.get(&format!("/v1/files/{file}")).await.status, 200, "same owner name, same objects");
    error_of(&anonymous.get("/v1/files").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_unknown_cursors_answer_alike() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let dir = app.data_dir();
    let alice = Client::with_key(app.client.base.clone(), &create_key(&dir, "alice", false));
    let bob = Client::with_key(app.client.base.clone(), &create_key(&dir, "bob", false));
    let b1 = bob.submit(&chat_lines(1)).await;
    let a_batch = alice.submit(&chat_lines(1)).await;
    let a_file = alice.batch(&a_batch).await["input_file_id"].as_str().unwrap().to_string();
    let b2 = bob.submit(&chat_lines(1)).await;
    bob.wait_terminal(&b1, MINUTE).await;
    bob.wait_terminal(&b2, MINUTE).await;
    alice.wait_terminal(&a_batch, MINUTE).await;
    let unknown_file = "file-00000000000000000000000000000000";
    let unknown_batch = "batch_00000000000000000000000000000000";
    for order in ["desc", "asc"] {
        let foreign = bob.get(&format!("/v1/files?after={a_file}&order={order}")).await;
        let unknown = bob.get(&format!("/v1/files?after={unknown_file}&order={order}")).await;
        assert_eq!((foreign.status, unknown.status), (200, 200));
        assert_eq!(foreign.body, unknown.body, "files, order {order}: a foreign cursor answers like an unknown one");
    }
    let foreign = bob.get(&format!("/v1/batches?after={a_batch}")).await;
    let unknown = bob.get(&format!("/v1/batches?after={unknown_batch}")).await;
    assert_eq!((foreign.status, unknown.status), (200, 200));
    assert_eq!(foreign.body, unknown.body, "batches: a foreign cursor answers like an unknown one");
    // One's own cursors still page.
    let own = bob.get(&format!("/v1/batches?after={b2}")).await;
    let ids: Vec<&str> = own.body["data"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![b1.as_str()], "{}", own.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_mode_refuses_foreign_hosts_and_origins() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let port = c.base.rsplit(':').next().unwrap().to_string();
    let get_as = |host: String| c.http.get(c.url("/v1/files")).header("host", host).send();

    // DNS rebinding: the browser sends the attacker's name as Host.
    for host in ["attacker.example".to_string(), format!("attacker.example:{port}"), format!("localhost.evil:{port}")] {
        let resp = get_as(host.clone()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "Host {host}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
    }
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
        assert_eq!(get_as(host.clone()).await.unwrap().status().as_u16(), 200, "Host {host}");
    }
    // Public paths stay public under any name (a probe through a load balancer).
    let resp = c.http.get(c.url("/health")).header("host", "lb.internal").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // CSRF: a cross-site form post carries the attacker's Origin.
    let upload = |origin: Option<&str>| {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", reqwest::multipart::Part::bytes(chat_lines(1).into_bytes()).file_name("x.jsonl"));
        let mut req = c.http.post(c.url("/v1/files")).multipart(form);
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.send()
    };
    for origin in ["http://attacker.example", "null", &format!("http://127.0.0.1:{}", port.parse::<u16>().unwrap() + 1)]
    {
        let resp = upload(Some(origin)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "Origin {origin}");
    }
    assert_eq!(c.get("/v1/files").await.body["data"], json!([]), "nothing stored");
    // The server's own page (same origin) and SDKs (no Origin) are served.
    assert_eq!(upload(Some(&c.base)).await.unwrap().status().as_u16(), 200);
    assert_eq!(upload(None).await.unwrap().status().as_u16(), 200);
    still_serves(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_in_openai_envelope() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let e = error_of(&Client::answer(c.http.put(c.url("/v1/files")).send().await.unwrap()).await, 405);
    assert_eq!(e["code"], "method_not_allowed");
    error_of(&Client::answer(c.http.delete(c.url("/v1/batches")).send().await.unwrap()).await, 405);
    // A path segment that is not UTF-8 once percent-decoded.
    let e = error_of(&c.get("/v1/files/%FF%FE").await, 400);
    assert!(e["message"].as_str().unwrap().contains("UTF-8"), "{e}");
    error_of(&c.get("/v1/batches/%C3%28").await, 400);
    // A query axum cannot parse.
    error_of(&c.get("/v1/files?limit=many").await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_health_needs_a_key_or_the_metrics_token_once_keys_exist() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--metrics-token", "scrape-token"]);
    let anonymous = &app.client;
    // Keyless on loopback: the operator's own machine sees everything.
    assert_eq!(anonymous.get("/v1/health").await.status, 200);
    let key = create_key(&app.data_dir(), "ops", false);
    for path in ["/v1/health", "/health?verbose=1"] {
        error_of(&anonymous.get(path).await, 401);
        let with_key = Client::with_key(anonymous.base.clone(), &key).get(path).await;
        assert_eq!(with_key.status, 200, "{path} with a key");
        assert!(with_key.body["queue"].is_object(), "{}", with_key.body);
        let with_token = Client::with_key(anonymous.base.clone(), "scrape-token").get(path).await;
        assert_eq!(with_token.status, 200, "{path} with the metrics token");
    }
    // Liveness and readiness stay public, and say nothing of the queue.
    let brief = anonymous.get("/health").await;
    assert_eq!(brief.body, json!({"status": "ok"}));
    let ready = anonymous.get("/ready").await;
    assert!(ready.body.get("queue").is_none(), "{}", ready.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_every_ipv6_address_counts_ipv4_loopback_as_loopback() {
    let sim = default_sim().await;
    // Bound to `::`, the server sees IPv4 clients as `::ffff:127.0.0.1`.
    let app = serve(&sim, &["--host", "::"]);
    let port = app.proc.base.as_ref().unwrap().rsplit(':').next().unwrap().to_string();
    for base in [format!("http://127.0.0.1:{port}"), format!("http://[::1]:{port}")] {
        let c = Client::new(base.clone());
        let files = c.get("/v1/files").await;
        assert_eq!(files.status, 200, "{base}: a loopback client without keys is served: {}", files.body);
    }
}
