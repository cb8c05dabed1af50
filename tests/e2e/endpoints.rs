//! Every endpoint a batch can target reaches the upstream's matching route, with the body
//! forwarded verbatim and the upstream's answer kept verbatim in the output file.

use serde_json::{json, Value};

use crate::support::*;

async fn run(c: &Client, endpoint: &str, bodies: Vec<Value>) -> Vec<Value> {
    let content: String = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"custom_id": format!("c{i}"), "method": "POST", "url": endpoint, "body": body}).to_string() + "\n"
        })
        .collect();
    let file = c.upload(&content).await;
    let b = c.create_batch(&file, endpoint, "24h").await;
    let done = c.wait_terminal(b["id"].as_str().unwrap(), MINUTE).await;
    assert_eq!(done["status"], "completed", "{endpoint}: {done}");
    assert_eq!(done["endpoint"], endpoint);
    let (mut out, err) = c.results(&done).await;
    assert!(err.is_empty(), "{endpoint}: {err:?}");
    out.sort_by_key(|l| l["custom_id"].as_str().unwrap()[1..].parse::<usize>().unwrap());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_is_routed_to_its_upstream_route() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;

    let out = run(c, "/v1/completions", vec![json!({"model": MODEL, "prompt": "once upon", "max_tokens": 3})]).await;
    assert_eq!(out[0]["response"]["body"]["object"], "text_completion");
    assert_eq!(out[0]["response"]["body"]["choices"][0]["text"], "echo: once upon");

    let out = run(
        c,
        "/v1/embeddings",
        vec![json!({"model": MODEL, "input": "alpha"}), json!({"model": MODEL, "input": "beta"})],
    )
    .await;
    let a = &out[0]["response"]["body"]["data"][0]["embedding"];
    let b = &out[1]["response"]["body"]["data"][0]["embedding"];
    assert_eq!(a.as_array().unwrap().len(), upstream_sim::det::EMBEDDING_DIM);
    assert_ne!(a, b, "each body is computed from its own request");
    let expected: Vec<f64> = upstream_sim::det::embedding_for("alpha");
    assert_eq!(a, &json!(expected));
    assert!(out[0]["response"]["body"]["usage"]["prompt_tokens"].as_i64().unwrap() > 0);

    let out = run(c, "/v1/score", vec![json!({"model": MODEL, "text_1": "q", "text_2": "d"})]).await;
    assert_eq!(out[0]["response"]["body"]["data"][0]["score"], json!(upstream_sim::det::score_for("q", "d")));

    let out = run(c, "/v1/rerank", vec![json!({"model": MODEL, "query": "q", "documents": ["x", "y"]})]).await;
    assert_eq!(out[0]["response"]["body"]["results"].as_array().unwrap().len(), 2);

    let out = run(
        c,
        "/v1/responses",
        vec![
            json!({"model": MODEL, "input": "tell me", "max_output_tokens": 4}),
            json!({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "parts"}]}]}),
        ],
    )
    .await;
    let body = &out[0]["response"]["body"];
    assert_eq!(body["object"], "response", "{body}");
    assert_eq!(body["output"][0]["content"][0]["text"], "echo: tell me");
    assert_eq!(out[1]["response"]["body"]["output"][0]["content"][0]["text"], "echo: parts");
    assert_eq!(sim.stats().responses_ok, 7);
}

/// `/v1/responses` answers carry `usage` in the Responses API's names (`input_tokens`,
/// `output_tokens`): the batch's `usage` sums them as it does chat answers' `prompt_tokens`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_batch_sums_the_responses_usage() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let content: String = (0..4)
        .map(|i| {
            let body = json!({"model": MODEL, "input": format!("question {i} here"), "max_output_tokens": 5});
            json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/responses", "body": body}).to_string()
                + "\n"
        })
        .collect();
    let file = c.upload(&content).await;
    let b = c.create_batch(&file, "/v1/responses", "24h").await;
    let done = c.wait_terminal(b["id"].as_str().unwrap(), MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    assert!(err.is_empty(), "{err:?}");
    let sum = |f: &str| out.iter().map(|l| l["response"]["body"]["usage"][f].as_i64().unwrap()).sum::<i64>();
    assert_eq!(sum("output_tokens"), 20);
    assert_eq!(done["usage"]["output_tokens"], 20, "{done}");
    assert_eq!(done["usage"]["input_tokens"], sum("input_tokens"), "{done}");
    assert_eq!(done["usage"]["total_tokens"], sum("total_tokens"), "{done}");

    // A line for another endpoint is refused by validation, naming its line, as for any endpoint.
    let bad = json!({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"model": MODEL}});
    let file = c.upload(&(bad.to_string() + "\n")).await;
    let b = c.create_batch(&file, "/v1/responses", "24h").await;
    let failed = c.wait_terminal(b["id"].as_str().unwrap(), MINUTE).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["errors"]["data"][0]["code"], "invalid_url", "{failed}");
    assert_eq!(failed["errors"]["data"][0]["line"], 1, "{failed}");
}
