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
    assert_eq!(sim.stats().responses_ok, 5);
}
