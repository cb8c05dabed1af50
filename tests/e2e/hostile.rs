//! Hostile input over HTTP against the real binary: malformed, oversized and adversarial batch
//! files, path-like file names, wrong content types and a slowloris upload. Each gets its clear
//! error (OpenAI's envelope, or a failed batch whose `errors.data[]` names the line), nothing is
//! written outside the data folder or left half-stored, and the server keeps serving: every test
//! ends by checking `/health` and running a good batch to completion.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

const CHAT: &str = "/v1/chat/completions";

/// A valid chat request line with `custom_id` `id`.
fn good(id: &str) -> String {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": id}], "max_tokens": 5});
    json!({"custom_id": id, "method": "POST", "url": CHAT, "body": body}).to_string()
}

/// Uploads raw bytes as a batch input file and returns its id.
async fn upload_bytes(c: &Client, content: Vec<u8>) -> String {
    let a = c.upload_raw(content, "input.jsonl", Some("batch")).await;
    assert_eq!(a.status, 200, "upload: {}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

/// Runs a chat batch over an uploaded file and returns it once it has ended.
async fn run_batch(c: &Client, file: &str) -> Value {
    let b = c.create_batch(file, CHAT, "24h").await;
    c.wait_terminal(b["id"].as_str().unwrap(), MINUTE).await
}

/// The `(code, line)` of each of a failed batch's errors; checks every error has a message.
#[track_caller]
fn errors_of(batch: &Value) -> Vec<(String, Option<u64>)> {
    assert_eq!(batch["status"], "failed", "{batch}");
    let data = batch["errors"]["data"].as_array().unwrap_or_else(|| panic!("no errors.data: {batch}"));
    data.iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {e}");
            (e["code"].as_str().unwrap().to_string(), e["line"].as_u64())
        })
        .collect()
}

/// The message of the error reported for `line`.
#[track_caller]
fn message_at(batch: &Value, line: u64) -> String {
    let data = batch["errors"]["data"].as_array().unwrap();
    let e = data.iter().find(|e| e["line"] == line).unwrap_or_else(|| panic!("no error on line {line}: {batch}"));
    e["message"].as_str().unwrap().to_string()
}

/// `/health` answers and a good batch still runs to completion.
pub(crate) async fn still_serves(c: &Client) {
    let h = c.get("/health").await;
    assert_eq!(h.status, 200, "{}", h.body);
    let id = c.submit(&chat_lines(3)).await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["request_counts"]["completed"], 3, "{done}");
}

/// Every regular file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The file ids `GET /v1/files` lists.
async fn listed_ids(c: &Client) -> Vec<String> {
    let a = c.get("/v1/files?limit=10000").await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
}

/// Names of the entries of a folder (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Polls `check` every 50 ms until it holds; fails with `what` after 30 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const BOUNDARY: &str = "hostile-boundary-7d3f";

/// A multipart body written by hand, so the test controls every byte of the part headers.
fn multipart(purpose: &str, disposition: &[u8], content_type: Option<&str>, content: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n").as_bytes(),
    );
    b.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: ").as_bytes());
    b.extend_from_slice(disposition);
    b.extend_from_slice(b"\r\n");
    if let Some(ct) = content_type {
        b.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
    }
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(content);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

/// POSTs raw bytes with the given content type (none: no header).
async fn post_raw(c: &Client, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    let mut req = c.http.post(c.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), headers }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_fail_with_their_code_and_line() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;

    // One file, one hostile line per line number; validation reports each with its line.
    let mut file: Vec<Vec<u8>> = vec![good("ok-1").into_bytes()];
    // 2: not UTF-8.
    file.push(b"{\"custom_id\": \"bad-\xff\xfe\", \"method\": \"POST\"}".to_vec());
    // 3: a byte-order mark that does not open the file is not whitespace.
    file.push(format!("\u{feff}{}", good("bom-mid")).into_bytes());
    // 4: a body nesting 100k arrays (well-formed): refused, as serde_json and most upstreams
    // would refuse it, before the batch is accepted.
    let deep = format!(
        r#"{{"custom_id":"deep","method":"POST","url":"{CHAT}","body":{{"model":"{MODEL}","x":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    file.push(deep.into_bytes());
    // 5: the same at the top level of the line: not an object, refused before parsing.
    file.push("[".repeat(100_000).into_bytes());
    // 6: duplicate keys: refused, not "last one wins".
    file.push(
        format!(r#"{{"custom_id":"a","custom_id":"b","method":"POST","url":"{CHAT}","body":{{"model":"{MODEL}"}}}}"#)
            .into_bytes(),
    );
    // 7: a raw NUL byte inside a string (JSON forbids control characters there).
    file.push(
        format!(
            "{{\"custom_id\":\"nul\0here\",\"method\":\"POST\",\"url\":\"{CHAT}\",\"body\":{{\"model\":\"{MODEL}\"}}}}"
        )
        .into_bytes(),
    );
    // 8: NUL bytes between tokens.
    file.push(format!("\0{}\0", good("nul-outside")).into_bytes());
    // 9: a numeric custom_id.
    file.push(
        format!(r#"{{"custom_id":12345,"method":"POST","url":"{CHAT}","body":{{"model":"{MODEL}"}}}}"#).into_bytes(),
    );
    // 10: a good line whose custom_id holds an escaped NUL: valid JSON, accepted.
    file.push(good("escaped-\u{0}-nul").into_bytes());
    // 11: a JSON array holding a request's four fields in order: not an object.
    file.push(format!(r#"["arr","POST","{CHAT}",{{"model":"{MODEL}"}}]"#).into_bytes());
    // 12: the last line, cut in the middle of its JSON, with no trailing newline.
    let cut = good("cut");
    file.push(cut.as_bytes()[..cut.len() / 2].to_vec());
    let content = file.join(&b"\n"[..]);

    let id = upload_bytes(c, content.clone()).await;
    let done = run_batch(c, &id).await;
    let expected: Vec<(String, Option<u64>)> = [
        ("invalid_json_line", 2),
        ("invalid_json_line", 3),
        ("invalid_json_line", 4),
        ("invalid_json_line", 5),
        ("invalid_json_line", 6),
        ("invalid_json_line", 7),
        ("invalid_json_line", 8),
        ("invalid_custom_id", 9),
        ("invalid_json_line", 11),
        ("invalid_json_line", 12),
    ]
    .iter()
    .map(|(code, line)| (code.to_string(), Some(*line)))
    .collect();
    assert_eq!(errors_of(&done), expected, "{done:#}");
    assert!(message_at(&done, 2).contains("UTF-8"), "{}", message_at(&done, 2));
    assert!(message_at(&done, 4).contains("128 levels"), "{}", message_at(&done, 4));
    assert!(message_at(&done, 5).contains("not a JSON object"), "{}", message_at(&done, 5));
    assert!(message_at(&done, 6).contains("duplicate field `custom_id`"), "{}", message_at(&done, 6));
    assert!(message_at(&done, 7).contains("control character"), "{}", message_at(&done, 7));
    assert!(message_at(&done, 9).contains("12345"), "{}", message_at(&done, 9));
    assert!(message_at(&done, 11).contains("not a JSON object"), "{}", message_at(&done, 11));
    assert!(message_at(&done, 12).contains("EOF"), "{}", message_at(&done, 12));
    assert!(done["output_file_id"].is_null() && done["error_file_id"].is_null(), "{done}");
    // A failed validation changes nothing stored: the input is still there, byte for byte.
    let stored = c.http.get(c.url(&format!("/v1/files/{id}/content"))).send().await.unwrap();
    assert_eq!(stored.bytes().await.unwrap().as_ref(), &content[..]);

    // What editors and Windows add is accepted: an opening BOM, CRLF, blank and whitespace-only
    // lines (also CRLF ones), and an escaped NUL inside a string.
    let tolerated = format!("\u{feff}{}\r\n\r\n   \r\n{}\r\n\n\t\n{}", good("t-1"), good("t-\u{0}-2"), good("t-3"));
    let id = upload_bytes(c, tolerated.into_bytes()).await;
    let done = run_batch(c, &id).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["request_counts"]["total"], 3, "{done}");
    let (out, err) = c.results(&done).await;
    assert!(err.is_empty(), "{err:?}");
    let mut ids: Vec<&str> = out.iter().map(|l| l["custom_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec!["t-\u{0}-2", "t-1", "t-3"], "sorted: NUL comes first");

    // A file that is only a BOM and line endings has no requests.
    let id = upload_bytes(c, b"\xef\xbb\xbf\r\n\r\n \n".to_vec()).await;
    let done = run_batch(c, &id).await;
    assert_eq!(errors_of(&done), vec![("empty_file".to_string(), None)], "{done}");

    still_serves(c).await;
}

/// A 100 MB line against the default 16 MiB `--max-line-bytes`: streamed up (never held whole
/// by the test or the server) and reported as `line_too_long` on its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_line_is_line_too_long() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;

    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 100;
    let head = format!("{}\n", good("before"));
    let prefix = format!(
        r#"{{"custom_id":"huge","method":"POST","url":"{CHAT}","body":{{"model":"{MODEL}","messages":[{{"role":"user","content":""#
    );
    let tail = format!("\"}}]}}}}\n{}\n", good("after"));
    let total = head.len() + prefix.len() + CHUNK * CHUNKS + tail.len();
    let pieces = std::iter::once(head.into_bytes())
        .chain(std::iter::once(prefix.into_bytes()))
        .chain((0..CHUNKS).map(|_| vec![b'x'; CHUNK]))
        .chain(std::iter::once(tail.into_bytes()))
        .map(Ok::<_, std::io::Error>);
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part("file", reqwest::multipart::Part::stream_with_length(body, total as u64).file_name("huge.jsonl"));
    let resp = c.http.post(c.url("/v1/files")).multipart(form).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let file: Value = resp.json().await.unwrap();
    assert_eq!(file["bytes"], total as u64, "{file}");

    let done = run_batch(c, file["id"].as_str().unwrap()).await;
    assert_eq!(errors_of(&done), vec![("line_too_long".to_string(), Some(2))], "{done:#}");
    assert!(message_at(&done, 2).contains(&(16 * 1024 * 1024).to_string()), "{}", message_at(&done, 2));

    still_serves(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_like_file_names_stay_inside_the_data_dir() {
    let sim = default_sim().await;
    // The data folder sits three levels down in a folder of its own, so anything a file name
    // made the server write above it (`../..`) would show up under `root`.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("a/b/data");
    std::fs::create_dir_all(&data).unwrap();
    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend_from_slice(FAST);
    let proc = Proc::start("serve", &data, &args);
    let c = &proc.client();
    let content = chat_lines(2);

    let long = "n".repeat(5000);
    // (Content-Disposition as sent, the stored filename).
    let cases: Vec<(Vec<u8>, String)> = vec![
        (br#"form-data; name="file"; filename="../../etc/passwd""#.to_vec(), "passwd".into()),
        (br#"form-data; name="file"; filename="..\..\x""#.to_vec(), "x".into()),
        (br#"form-data; name="file"; filename="/etc/passwd""#.to_vec(), "passwd".into()),
        (br#"form-data; name="file"; filename="C:\Windows\win.ini""#.to_vec(), "win.ini".into()),
        (br#"form-data; name="file"; filename="../../""#.to_vec(), "file".into()),
        (br#"form-data; name="file"; filename="..""#.to_vec(), "file".into()),
        (br#"form-data; name="file"; filename="""#.to_vec(), "file".into()),
        (format!(r#"form-data; name="file"; filename="{long}""#).into_bytes(), "n".repeat(255)),
        // A tab is the one control character a header may carry; it is dropped.
        (b"form-data; name=\"file\"; filename=\"tab\there.jsonl\"".to_vec(), "tabhere.jsonl".into()),
        // Unquoted and not percent-decoded: `%2F` stays text, never a separator.
        (br#"form-data; name="file"; filename=..%2F..%2Fescape"#.to_vec(), "..%2F..%2Fescape".into()),
        // RFC 5987 `filename*` is not read: the stored name is the default.
        (br#"form-data; name="file"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd"#.to_vec(), "file".into()),
        // A name that is not UTF-8 is not used.
        (b"form-data; name=\"file\"; filename=\"bad\xff.jsonl\"".to_vec(), "file".into()),
    ];
    let mut stored = Vec::new();
    for (disposition, want) in &cases {
        let shown = String::from_utf8_lossy(disposition);
        let body = multipart("batch", disposition, Some("application/jsonl"), content.as_bytes());
        let a = post_raw(c, "/v1/files", Some(&format!("multipart/form-data; boundary={BOUNDARY}")), body).await;
        assert_eq!(a.status, 200, "{shown}: {}", a.body);
        assert_eq!(a.body["filename"].as_str(), Some(want.as_str()), "{shown}");
        let id = a.body["id"].as_str().unwrap().to_string();
        // The name is served back in a header: it must still make a valid response.
        let got = c.http.get(c.url(&format!("/v1/files/{id}/content"))).send().await.unwrap();
        assert_eq!(got.status().as_u16(), 200, "{shown}");
        assert_eq!(got.text().await.unwrap(), content);
        stored.push(id);
    }

    // A line break inside the file name ends the part's header. When what follows reads as a
    // header it is one (ignored), and the cut-off quoted name is no name: stored as "file".
    let disposition = b"form-data; name=\"file\"; filename=\"evil\r\nX-Injected: 1.jsonl\"";
    let body = multipart("batch", disposition, None, content.as_bytes());
    let a = post_raw(c, "/v1/files", Some(&format!("multipart/form-data; boundary={BOUNDARY}")), body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["filename"], "file");
    stored.push(a.body["id"].as_str().unwrap().to_string());
    // Otherwise the part's header is malformed and the form is refused whole.
    for disposition in [
        &b"form-data; name=\"file\"; filename=\"evil\nname.jsonl\""[..],
        &b"form-data; name=\"file\"; filename=\"evil\\\r\nname.jsonl\""[..],
    ] {
        let shown = String::from_utf8_lossy(disposition);
        let body = multipart("batch", disposition, None, content.as_bytes());
        let a = post_raw(c, "/v1/files", Some(&format!("multipart/form-data; boundary={BOUNDARY}")), body).await;
        let e = error_of(&a, 400);
        assert!(e["message"].as_str().unwrap().contains("multipart"), "{shown}: {e}");
    }
    // reqwest's own escaping of a newline in a file name (`\` + newline) is refused the same way.
    let a = c.upload_raw(content.clone().into_bytes(), "line1\nline2.jsonl", Some("batch")).await;
    error_of(&a, 400);

    // Nothing outside the data folder; inside it only the database and one body per stored file.
    let outside: Vec<_> = files_under(root.path()).into_iter().filter(|p| !p.starts_with("a/b/data")).collect();
    assert!(outside.is_empty(), "written outside the data folder: {outside:?}");
    let mut bodies = Vec::new();
    for path in files_under(&data) {
        let name = path.to_string_lossy().into_owned();
        if let Some(id) = name.strip_prefix("files/files/") {
            bodies.push(id.to_string());
        } else {
            assert!(name.starts_with("vllm-batch.db"), "unexpected file in the data folder: {name}");
        }
    }
    bodies.sort();
    stored.sort();
    assert_eq!(bodies, stored);
    let mut listed = listed_ids(c).await;
    listed.sort();
    assert_eq!(listed, stored, "every body has its row and every row its body");

    still_serves(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_types_get_400() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;

    // JSON where a form is expected.
    let a = c.post("/v1/files", json!({"purpose": "batch", "file": chat_lines(1)})).await;
    let e = error_of(&a, 400);
    assert!(e["message"].as_str().unwrap().contains("multipart/form-data"), "{e}");
    // No content type at all, and a form without its boundary.
    error_of(&post_raw(c, "/v1/files", None, chat_lines(1).into_bytes()).await, 400);
    let body = multipart("batch", br#"form-data; name="file"; filename="a.jsonl""#, None, b"{}");
    error_of(&post_raw(c, "/v1/files", Some("multipart/form-data"), body.clone()).await, 400);
    // The wrong boundary: the body holds no part the server can find.
    let a = post_raw(c, "/v1/files", Some("multipart/form-data; boundary=not-the-one"), body).await;
    error_of(&a, 400);

    // A form where JSON is expected.
    let file = c.upload(&chat_lines(1)).await;
    let form = reqwest::multipart::Form::new()
        .text("input_file_id", file.clone())
        .text("endpoint", CHAT)
        .text("completion_window", "24h");
    let resp = c.http.post(c.url("/v1/batches")).multipart(form).send().await.unwrap();
    let status = resp.status().as_u16();
    let a = Answer { status, headers: resp.headers().clone(), body: resp.json().await.unwrap() };
    let e = error_of(&a, 400);
    assert!(e["message"].as_str().unwrap().contains("application/json"), "{e}");
    // Valid JSON under text/plain is refused too, as a missing JSON content type.
    let json_text = json!({"input_file_id": file, "endpoint": CHAT, "completion_window": "24h"}).to_string();
    error_of(&post_raw(c, "/v1/batches", Some("text/plain"), json_text.into_bytes()).await, 400);
    assert_eq!(c.get("/v1/batches").await.body["data"], json!([]), "no batch was created");

    // The file part's own content type does not matter: text/plain is fine, and runs.
    let content = chat_lines(2);
    let body = multipart(
        "batch",
        br#"form-data; name="file"; filename="plain.txt""#,
        Some("text/plain; charset=utf-8"),
        content.as_bytes(),
    );
    let a = post_raw(c, "/v1/files", Some(&format!("multipart/form-data; boundary={BOUNDARY}")), body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let done = run_batch(c, a.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");

    still_serves(c).await;
}

/// `--max-line-bytes` bounds every line, the last one too (a regression test: `LineReader` once
/// let a last line without a newline be one byte over the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unterminated_last_line_over_the_limit_is_line_too_long() {
    let sim = default_sim().await;
    let line = good("edge");
    let limit = (line.len() - 1).to_string();
    let app = serve(&sim, &["--max-line-bytes", &limit]);
    let c = &app.client;
    // With its newline the same line is refused, as it should be.
    let id = upload_bytes(c, format!("{line}\n").into_bytes()).await;
    let done = run_batch(c, &id).await;
    assert_eq!(errors_of(&done), vec![("line_too_long".to_string(), Some(1))], "{done:#}");
    let id = upload_bytes(c, line.into_bytes()).await;
    let done = run_batch(c, &id).await;
    assert_eq!(errors_of(&done), vec![("line_too_long".to_string(), Some(1))], "{done:#}");
}

/// Opens a raw HTTP/1.1 connection and sends the request head of a multipart upload announcing
/// a 10 MB body.
async fn start_slow_upload(base: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Content-Length: 10000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Sends `bytes` a few at a time, pausing between them.
async fn trickle(s: &mut TcpStream, bytes: &[u8]) {
    for piece in bytes.chunks(16) {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Slow clients that stall mid-upload: other clients are served meanwhile, a stalled upload has
/// no row and no committed body, and once the clients go away nothing of their uploads stays on
/// disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_uploads_block_nobody_and_leave_nothing() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let base = app.proc.base.clone().unwrap();
    let tmp = app.data_dir().join("files/tmp");
    let bodies = app.data_dir().join("files/files");
    let line = good("slow");

    // Client 1 stalls inside the file part: its body is still a temporary file.
    let mut mid_file = start_slow_upload(&base).await;
    let part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.jsonl\"\r\n\r\n{line}\n{line}"
    );
    trickle(&mut mid_file, part.as_bytes()).await;
    eventually("the stalled upload's temporary file exists", || !entries(&tmp).is_empty()).await;

    // Client 2 sends a whole file part, then stalls inside the purpose part that follows: its
    // body stays a temporary file until every field was read and checked.
    let mut after_file = start_slow_upload(&base).await;
    let part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow2.jsonl\"\r\n\r\n{line}\n\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbat"
    );
    trickle(&mut after_file, part.as_bytes()).await;
    eventually("the second stalled upload's temporary file exists", || entries(&tmp).len() == 2).await;
    assert!(entries(&bodies).is_empty(), "nothing is committed before the upload is complete");

    // Meanwhile everyone else is served, and neither stalled upload is listed.
    assert_eq!(c.get("/health").await.status, 200);
    let id = c.submit(&chat_lines(3)).await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let listed = listed_ids(c).await;
    assert_eq!(listed.len(), 2, "only the good batch's input and output files: {listed:?}");

    // The slow clients go away: their temporary file and committed body are removed.
    drop(mid_file);
    drop(after_file);
    eventually("no temporary file remains", || entries(&tmp).is_empty()).await;
    let mut rows = listed_ids(c).await;
    rows.sort();
    eventually("every remaining body has its row", || {
        let mut on_disk = entries(&bodies);
        on_disk.sort();
        on_disk == rows
    })
    .await;

    still_serves(c).await;
}

/// SIGTERM with an upload stalled mid-body: the API stops within `--api-drain-timeout`, exits 0,
/// and leaves no temporary file and no body behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_forever_for_a_stalled_upload() {
    let sim = default_sim().await;
    let mut app = serve(&sim, &["--api-drain-timeout", "1s"]);
    let base = app.proc.base.clone().unwrap();
    let tmp = app.data_dir().join("files/tmp");
    let bodies = app.data_dir().join("files/files");
    let mut stalled = start_slow_upload(&base).await;
    let part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.jsonl\"\r\n\r\n{}",
        good("stalled")
    );
    trickle(&mut stalled, part.as_bytes()).await;
    eventually("the stalled upload's temporary file exists", || !entries(&tmp).is_empty()).await;
    app.proc.signal("TERM");
    let code = app.proc.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "exits despite the stalled client; logs:\n{}", app.proc.logs().join("\n"));
    assert!(app.proc.logs().iter().any(|l| l.contains("closing them")), "the cut is logged");
    assert!(entries(&tmp).is_empty(), "no temporary file left: {:?}", entries(&tmp));
    assert!(entries(&bodies).is_empty(), "no body left: {:?}", entries(&bodies));
    drop(stalled);
}
