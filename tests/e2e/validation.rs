//! Validation of input files: every bad-input case fails the batch with its code and line
//! number, the server keeps serving, and nothing already stored is touched.

use serde_json::{json, Value};

use crate::support::*;

fn line(custom_id: Value, method: &str, url: &str, body: Value) -> String {
    json!({"custom_id": custom_id, "method": method, "url": url, "body": body}).to_string()
}

fn good(i: usize) -> String {
    line(json!(format!("ok-{i}")), "POST", "/v1/chat/completions", json!({"model": MODEL, "messages": []}))
}

/// A file of good lines with `bad` placed at (1-based) line `at`.
fn file_with(bad: &str, at: usize, total: usize) -> String {
    (1..=total).map(|n| if n == at { bad.to_string() } else { good(n) } + "\n").collect()
}

async fn fails_with(c: &Client, content: &str, code: &str, line_no: Option<u64>, extra: &[&str]) -> Value {
    let file = c.upload(content).await;
    let b = c.create_batch(&file, "/v1/chat/completions", "24h").await;
    let id = b["id"].as_str().unwrap();
    let done = c.wait_terminal(id, MINUTE).await;
    assert_eq!(done["status"], "failed", "{code}: {done}");
    assert!(done["failed_at"].is_i64());
    assert!(done["in_progress_at"].is_null());
    assert!(done["output_file_id"].is_null() && done["error_file_id"].is_null());
    let errors = &done["errors"];
    assert_eq!(errors["object"], "list");
    let first = &errors["data"][0];
    assert_eq!(first["code"], code, "{done}");
    assert!(first["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(first["line"].as_u64(), line_no, "{code}: {done}");
    for needle in extra {
        assert!(first["message"].as_str().unwrap().contains(needle), "{code}: {first}");
    }
    // Nothing stored was touched: the input is still there, byte for byte.
    assert_eq!(c.content(&file).await, content);
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_fails_with_its_code_and_line() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--max-requests-per-batch", "20"]);
    let c = &app.client;
    let chat = "/v1/chat/completions";
    let body = json!({"model": MODEL, "messages": []});

    fails_with(c, &file_with("{\"custom_id\": \"x\", oops", 3, 5), "invalid_json_line", Some(3), &[]).await;
    fails_with(
        c,
        &file_with(&json!({"method": "POST", "url": chat, "body": body}).to_string(), 2, 4),
        "missing_custom_id",
        Some(2),
        &[],
    )
    .await;
    fails_with(c, &file_with(&line(json!(42), "POST", chat, body.clone()), 4, 4), "invalid_custom_id", Some(4), &[])
        .await;
    let dup = format!("{}\n{}\n{}\n", good(1), good(2), good(1));
    fails_with(c, &dup, "duplicate_custom_id", Some(3), &["ok-1"]).await;
    fails_with(c, &file_with(&line(json!("g"), "GET", chat, body.clone()), 2, 3), "invalid_method", Some(2), &[]).await;
    fails_with(
        c,
        &file_with(&line(json!("u"), "POST", "/v1/embeddings", body.clone()), 5, 6),
        "invalid_url",
        Some(5),
        &["/v1/chat/completions"],
    )
    .await;
    fails_with(
        c,
        &file_with(&line(json!("m"), "POST", chat, json!({"messages": []})), 2, 2),
        "missing_model",
        Some(2),
        &[],
    )
    .await;
    let other = line(json!("o"), "POST", chat, json!({"model": "another-model", "messages": []}));
    fails_with(c, &file_with(&other, 3, 3), "mismatched_model", Some(3), &["another-model"]).await;
    let unknown: String =
        (0..3).map(|i| line(json!(format!("n{i}")), "POST", chat, json!({"model": "no-such-model"})) + "\n").collect();
    fails_with(c, &unknown, "model_not_found", Some(1), &["no-such-model"]).await;
    fails_with(c, "", "empty_file", None, &[]).await;
    fails_with(c, "\n  \n\n", "empty_file", None, &[]).await;
    let many: String = (1..=21).map(|n| good(n) + "\n").collect();
    fails_with(c, &many, "too_many_lines", Some(21), &["20"]).await;

    // Several errors are all reported, each with its line.
    let several = format!("{}\nnot json\n{}\n{}\n", good(1), line(json!("z"), "PUT", chat, body.clone()), good(1));
    let done = fails_with(c, &several, "invalid_json_line", Some(2), &[]).await;
    let lines: Vec<_> =
        done["errors"]["data"].as_array().unwrap().iter().map(|e| (e["code"].clone(), e["line"].clone())).collect();
    assert_eq!(
        lines,
        vec![
            (json!("invalid_json_line"), json!(2)),
            (json!("invalid_method"), json!(3)),
            (json!("duplicate_custom_id"), json!(4))
        ]
    );

    // The server kept serving and still runs good batches.
    let ok = c.submit(&chat_lines(5)).await;
    let done = c.wait_terminal(&ok, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerates_bom_crlf_and_blank_lines() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--chunk-size", "2"]);
    let c = &app.client;
    let lines: Vec<String> = chat_lines(5).lines().map(str::to_string).collect();
    let content =
        format!("\u{feff}{}\r\n\r\n{}\r\n\n{}\n   \n{}\r\n{}", lines[0], lines[1], lines[2], lines[3], lines[4]);
    let id = c.submit(&content).await;
    let done = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, 5);
    assert!(err.is_empty());
}

/// Duplicate custom_ids are found however far apart they are. Validation keeps 131,072 lines'
/// digests in memory; past that it spills sorted runs to an anonymous scratch file in the data
/// folder (gone afterwards), so these files exercise both the runs and their merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_far_apart_in_a_large_file_are_found() {
    const N: usize = 140_000;
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let compact = |id: &str| {
        format!(r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{MODEL}"}}}}"#)
            + "\n"
    };
    let ids: Vec<String> = (1..=N).map(|n| format!("r{n}")).collect();

    // All distinct: no false repeat across the runs; the batch is validated, then cancelled.
    let id = c.submit(&ids.iter().map(|i| compact(i)).collect::<String>()).await;
    let b = c.wait_until(&id, MINUTE, |b| b["status"] != "validating").await;
    assert_eq!(b["status"], "in_progress", "{b}");
    assert_eq!(b["request_counts"]["total"], N as u64);
    assert_eq!(c.post(&format!("/v1/batches/{id}/cancel"), json!({})).await.status, 200);
    assert_eq!(c.wait_terminal(&id, MINUTE).await["status"], "cancelled");

    // Repeats within the first run, across the edge of the first run, and far apart.
    let mut dup = ids.clone();
    dup[6] = "r5".into();
    dup[131_072] = "r131072".into();
    dup[N - 1] = "r2".into();
    let content: String = dup.iter().map(|i| compact(i)).collect();
    let done = fails_with(c, &content, "duplicate_custom_id", Some(7), &["\"r5\"", "first on line 5"]).await;
    let errors: Vec<(Value, Value, String)> = done["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["code"].clone(), e["line"].clone(), e["message"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!((&errors[1].0, &errors[1].1), (&json!("duplicate_custom_id"), &json!(131_073)));
    assert!(errors[1].2.contains("\"r131072\"") && errors[1].2.contains("first on line 131072"), "{errors:?}");
    assert_eq!((&errors[2].0, &errors[2].1), (&json!("duplicate_custom_id"), &json!(N)));
    assert!(errors[2].2.contains("\"r2\"") && errors[2].2.contains("first on line 2"), "{errors:?}");

    // The scratch file left nothing behind in the data folder.
    let mut entries: Vec<String> = std::fs::read_dir(app.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("vllm-batch.db"))
        .collect();
    entries.sort();
    assert_eq!(entries, ["files"], "data folder");
}
