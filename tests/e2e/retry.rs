//! `POST /v1/batches/{id}/retry` through the real server: the lines that did not succeed
//! become a new batch with their original `custom_id`s and bodies, and once it completes the
//! two batches' output files cover every `custom_id` once. Also through `vllm-batch batches
//! retry --wait`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::support::*;

fn ids(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| l["custom_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failed_lines_of_a_batch_run_again_as_a_new_batch() {
    // Half the requests fail with a 500 and there are no retries: about half end upstream_error.
    let sim = sim(SimConfig {
        faults: upstream_sim::FaultRates { error_500: 0.5, ..Default::default() },
        seed: 7,
        ..SimConfig::default()
    })
    .await;
    let app = serve(&sim, &["--max-retries", "0"]);
    let c = &app.client;
    let n = 60;
    // Two lines the upstream refuses for good (a final 400): not retried unless asked.
    let content = chat_lines_with(n, |i| if i == 5 || i == 6 { " __sim_400__".into() } else { String::new() });
    let id = c.submit(&content).await;
    let first = c.wait_terminal(&id, MINUTE).await;
    assert_eq!(first["status"], "completed", "{first}");
    let (out1, err1) = c.results(&first).await;
    check_exactly_once(&first, &out1, &err1, n);
    let codes: HashMap<String, String> = err1
        .iter()
        .map(|l| (l["custom_id"].as_str().unwrap().to_string(), l["error"]["code"].as_str().unwrap().to_string()))
        .collect();
    let upstream_errors: Vec<&String> =
        codes.iter().filter(|(_, c)| *c == "upstream_error").map(|(id, _)| id).collect();
    assert!(upstream_errors.len() >= 5, "the faults made failures: {codes:?}");
    assert_eq!(codes.values().filter(|c| *c == "invalid_request").count(), 2, "{codes:?}");

    // A batch that does not exist, or a body with an unknown field, is refused.
    error_of(&c.post("/v1/batches/batch_0123456789abcdef0123456789abcdef/retry", json!({})).await, 404);
    let e = error_of(&c.post(&format!("/v1/batches/{id}/retry"), json!({"bogus": true})).await, 400);
    assert_eq!(e["param"], "bogus", "{e}");

    sim.set_faults(upstream_sim::FaultRates::default());
    let retry = c.post(&format!("/v1/batches/{id}/retry"), json!({})).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    let second_id = retry.body["id"].as_str().unwrap().to_string();
    assert_eq!(retry.body["metadata"]["retry_of"], id.as_str());
    assert_eq!(retry.body["endpoint"], first["endpoint"]);
    assert_eq!(retry.body["completion_window"], first["completion_window"]);
    // Its input holds exactly the upstream_error lines, as they were in the original file.
    let input = c.content(retry.body["input_file_id"].as_str().unwrap()).await;
    let original: HashMap<String, &str> = content
        .lines()
        .map(|l| (serde_json::from_str::<Value>(l).unwrap()["custom_id"].as_str().unwrap().to_string(), l))
        .collect();
    let mut retried: Vec<String> = Vec::new();
    for line in input.lines() {
        let id = serde_json::from_str::<Value>(line).unwrap()["custom_id"].as_str().unwrap().to_string();
        assert_eq!(original[&id], line, "a retried line is the original line, byte for byte");
        retried.push(id);
    }
    let mut expected: Vec<String> = upstream_errors.iter().map(|s| s.to_string()).collect();
    expected.sort();
    retried.sort();
    assert_eq!(retried, expected);

    let second = c.wait_terminal(&second_id, MINUTE).await;
    assert_eq!(second["status"], "completed", "{second}");
    let (out2, err2) = c.results(&second).await;
    assert!(err2.is_empty(), "{err2:?}");
    // Every custom_id that the upstream can answer is in exactly one of the two outputs.
    let mut all = ids(&out1);
    all.extend(ids(&out2));
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no custom_id answered twice");
    assert_eq!(all.len(), n - 2, "every line but the two refused for good");

    // Asked to, the refused lines run again too (and are refused again).
    let third = c.post(&format!("/v1/batches/{id}/retry"), json!({"include_invalid_requests": true})).await;
    assert_eq!(third.status, 200, "{}", third.body);
    let third = c.wait_terminal(third.body["id"].as_str().unwrap(), MINUTE).await;
    assert_eq!(third["request_counts"]["total"], upstream_errors.len() as i64 + 2, "{third}");
    // The second batch failed nothing: there is nothing to retry.
    let e = error_of(&c.post(&format!("/v1/batches/{second_id}/retry"), json!({})).await, 409);
    assert!(e["message"].as_str().unwrap().contains("nothing to retry"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_retry_wait_runs_the_failed_lines_and_downloads_them() {
    let sim = sim(SimConfig {
        faults: upstream_sim::FaultRates { error_500: 0.5, ..Default::default() },
        seed: 3,
        ..SimConfig::default()
    })
    .await;
    let app = serve(&sim, &["--max-retries", "0"]);
    let c = &app.client;
    let id = c.submit(&chat_lines(30)).await;
    let first = c.wait_terminal(&id, MINUTE).await;
    let failed = first["request_counts"]["failed"].as_i64().unwrap();
    assert!(failed > 0, "{first}");
    sim.set_faults(upstream_sim::FaultRates::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("retried.jsonl");
    let o = std::process::Command::new(BIN)
        .args(["batches", "retry", &id, "--wait", "--json", "--poll-interval", "200ms", "-o", out.to_str().unwrap()])
        .env("OPENAI_BASE_URL", format!("{}/v1", c.base))
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let batch: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["metadata"]["retry_of"], id.as_str());
    let lines = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(lines as i64, failed, "the retried lines' answers were downloaded");
}
