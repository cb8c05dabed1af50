//! Integration tests for the simulated vLLM server: bodies, models, metrics,
//! fault injection and the max_num_seqs scheduler, over real HTTP.

use std::time::Duration;

use serde_json::{json, Value};
use upstream_sim::{det, spawn, FaultRates, SimConfig};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn chat_body(text: &str) -> Value {
    json!({"model": "sim-model", "messages": [
        {"role": "system", "content": "you are a test"},
        {"role": "user", "content": text}
    ], "max_tokens": 7})
}

/// Value of an unlabelled-by-us sample line `NAME{...} VALUE` in `/metrics`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

#[tokio::test]
async fn chat_echo_and_usage() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let resp = client()
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(&chat_body("hello there world"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "sim-model");
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() == "chatcmpl-".len() + 32);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hello there world");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // "you are a test" (4) + "hello there world" (3)
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 7);
    assert_eq!(body["usage"]["total_tokens"], 14);

    let stats = sim.stats();
    assert_eq!(stats.requests_received, 1);
    assert_eq!(stats.responses_ok, 1);
    assert_eq!(stats.prompt_tokens, 7);
    assert_eq!(stats.generation_tokens, 7);
    sim.shutdown().await;
}

#[tokio::test]
async fn other_endpoints_are_deterministic() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let c = client();
    let url = sim.base_url();

    let body: Value = c
        .post(format!("{url}/completions"))
        .json(&json!({"model": "sim-model", "prompt": "say hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "echo: say hi");
    assert_eq!(body["usage"]["completion_tokens"], 16);

    let body: Value = c
        .post(format!("{url}/embeddings"))
        .json(&json!({"model": "sim-model", "input": ["a", "b c"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][1]["index"], 1);
    let emb: Vec<f64> = serde_json::from_value(body["data"][1]["embedding"].clone()).unwrap();
    assert_eq!(emb, det::embedding_for("b c"));
    assert_eq!(body["usage"]["prompt_tokens"], 3);

    let body: Value = c
        .post(format!("{url}/score"))
        .json(&json!({"model": "sim-model", "text_1": "q", "text_2": "d"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][0]["object"], "score");
    assert_eq!(body["data"][0]["score"].as_f64().unwrap(), det::score_for("q", "d"));

    let body: Value = c
        .post(format!("{url}/rerank"))
        .json(&json!({"model": "sim-model", "query": "q", "documents": ["x", "y"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let doc = r["document"]["text"].as_str().unwrap();
        assert_eq!(r["relevance_score"].as_f64().unwrap(), det::score_for("q", doc));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn models_errors_and_metrics() {
    let sim = spawn(SimConfig { models: vec!["m1".into(), "m2".into()], ..SimConfig::default() }).await.unwrap();
    let c = client();
    let url = sim.base_url();

    let resp = c.get(format!("{url}/models")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "m1");
    assert_eq!(body["data"][1]["root"], "m2");
    assert_eq!(body["data"][0]["owned_by"], "vllm");
    assert_eq!(body["data"][0]["max_model_len"], 8192);

    // As vLLM does, a request without `model` runs on the (first) served model.
    let resp = c.post(format!("{url}/chat/completions")).json(&json!({"messages": [{"role": "user", "content": "x"}]}));
    let body: Value = resp.send().await.unwrap().json().await.unwrap();
    assert_eq!(body["model"], "m1", "{body}");

    let resp = c
        .post(format!("{url}/chat/completions"))
        .json(&json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "NotFoundError");
    assert_eq!(body["error"]["message"], "The model `nope` does not exist. Valid aliases: m1, m2.");
    assert_eq!(body["error"]["param"], "model");
    assert_eq!(body["error"]["code"], 404);

    let resp = c.post(format!("{url}/completions")).body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "Bad Request");
    assert_eq!(body["error"]["param"], "body.0");

    let root = url.trim_end_matches("/v1");
    let text = c.get(format!("{root}/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} TYPE missing");
        assert!(text.contains(&format!("# HELP {name} ")), "{name} HELP missing");
        assert!(text.contains(&format!("{name}{{")), "{name} sample missing");
    }
    assert!(text.contains("{engine=\"0\",model_name=\"m1\"}"));
    sim.shutdown().await;
}

#[tokio::test]
async fn arrivals_are_numbered_per_model() {
    let sim = spawn(SimConfig { models: vec!["m1".into(), "m2".into()], ..SimConfig::default() }).await.unwrap();
    let c = client();
    let url = sim.base_url();
    let send = |model: &'static str| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let body = json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
            c.post(format!("{url}/chat/completions")).json(&body).send().await.unwrap().status().as_u16()
        }
    };
    // Arrivals 1..=6, one at a time: m1, m1, nope (404: counted in all, not per model), m2, m1, m2.
    for (model, status) in [("m1", 200), ("m1", 200), ("nope", 404), ("m2", 200), ("m1", 200), ("m2", 200)] {
        assert_eq!(send(model).await, status, "{model}");
    }
    let stats: upstream_sim::SimStats =
        c.get(format!("{}/sim/stats", url.trim_end_matches("/v1"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats, sim.stats());
    assert_eq!(stats.requests_received, 6);
    let m1 = stats.model("m1");
    assert_eq!((m1.requests, m1.first_arrival, m1.last_arrival), (3, 1, 5));
    let m2 = stats.model("m2");
    assert_eq!((m2.requests, m2.first_arrival, m2.last_arrival), (2, 4, 6));
    assert_eq!(stats.models.iter().map(|m| m.model.as_str()).collect::<Vec<_>>(), ["m1", "m2"]);
    let none = stats.model("nope");
    assert_eq!((none.requests, none.first_arrival, none.last_arrival), (0, 0, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let sim =
        spawn(SimConfig { faults: FaultRates { error_429: 1.0, ..FaultRates::default() }, ..SimConfig::default() })
            .await
            .unwrap();
    let resp =
        client().post(format!("{}/chat/completions", sim.base_url())).json(&chat_body("hi")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429);

    // Faults can be switched off at runtime; /metrics is never faulted.
    sim.set_faults(FaultRates::default());
    let resp =
        client().post(format!("{}/chat/completions", sim.base_url())).json(&chat_body("hi")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let stats = sim.stats();
    assert_eq!((stats.faults_injected, stats.responses_ok), (1, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_breaks_the_body() {
    let sim = spawn(SimConfig { faults: FaultRates { reset: 1.0, ..FaultRates::default() }, ..SimConfig::default() })
        .await
        .unwrap();
    let resp =
        client().post(format!("{}/chat/completions", sim.base_url())).json(&chat_body("hi")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "reading a reset body must fail");
    sim.shutdown().await;
}

#[tokio::test]
async fn markers_and_deterministic_400() {
    let sim =
        spawn(SimConfig { faults: FaultRates { error_400: 0.5, ..FaultRates::default() }, ..SimConfig::default() })
            .await
            .unwrap();
    let c = client();
    let url = format!("{}/chat/completions", sim.base_url());
    let send = |body: Value| {
        let c = c.clone();
        let url = url.clone();
        async move { c.post(url).json(&body).send().await.unwrap() }
    };

    let resp = send(chat_body("please __sim_400__")).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "BadRequestError");
    assert_eq!(body["error"]["param"], "input_tokens");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("This model's maximum context length is 8192 tokens."));

    let resp = send(chat_body("please __sim_500__")).await;
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "InternalServerError");

    // With error_400 = 0.5, some bodies fail and some pass, and each body's
    // outcome is the same every time it is sent.
    let mut outcomes = Vec::new();
    for i in 0..20 {
        let first = send(chat_body(&format!("request {i}"))).await.status();
        let again = send(chat_body(&format!("request {i}"))).await.status();
        assert_eq!(first, again, "request {i} not deterministic");
        outcomes.push(first.as_u16());
    }
    assert!(outcomes.contains(&400) && outcomes.contains(&200), "{outcomes:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn max_num_seqs_queues_requests() {
    let sim = spawn(SimConfig { max_num_seqs: 2, base_latency_ms: 400, ..SimConfig::default() }).await.unwrap();
    let c = client();
    let url = sim.base_url();
    let metrics_url = format!("{}/metrics", url.trim_end_matches("/v1"));

    let requests: Vec<_> = (0..5)
        .map(|i| {
            let c = c.clone();
            let url = format!("{url}/chat/completions");
            tokio::spawn(async move {
                let resp = c.post(url).json(&chat_body(&format!("q{i}"))).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["choices"][0]["message"]["content"], format!("echo: q{i}"));
            })
        })
        .collect();

    let mut max_waiting = 0.0f64;
    let mut max_running = 0.0f64;
    while sim.stats().responses_ok < 5 {
        let text = c.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        let running = metric(&text, "vllm:num_requests_running");
        let waiting = metric(&text, "vllm:num_requests_waiting");
        assert!(running <= 2.0, "running {running} exceeds max_num_seqs");
        assert!(metric(&text, "vllm:kv_cache_usage_perc") <= 1.0);
        max_waiting = max_waiting.max(waiting);
        max_running = max_running.max(running);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in requests {
        r.await.unwrap();
    }
    assert!(max_waiting > 0.0, "never saw a waiting request");
    assert_eq!(max_running, 2.0);
    let stats = sim.stats();
    assert_eq!((stats.running, stats.waiting, stats.responses_ok), (0, 0, 5));
    let text = c.get(&metrics_url).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "vllm:request_success_total"), 5.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn hang_times_out_and_shutdown_still_returns() {
    let sim = spawn(SimConfig { faults: FaultRates { hang: 1.0, ..FaultRates::default() }, ..SimConfig::default() })
        .await
        .unwrap();
    let c = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let url = format!("{}/chat/completions", sim.base_url());
    let err = c.post(&url).json(&chat_body("hi")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    // A second hung request is still open while we shut down.
    let pending = tokio::spawn({
        let url = url.clone();
        async move { reqwest::Client::new().post(url).json(&chat_body("again")).send().await }
    });
    while sim.stats().requests_received < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown())
        .await
        .expect("shutdown must not wait for hung requests");
    let res = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("hung request must end at shutdown")
        .unwrap();
    match res {
        Err(_) => {}
        Ok(resp) => assert!(resp.bytes().await.is_err()),
    }
}
