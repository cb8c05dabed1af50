//! Request validation and deterministic response bodies for the six
//! inference endpoints (chat, completions, embeddings, score, rerank, responses).
//!
//! Bodies echo the request (`"echo: " + input`) or derive values from a hash
//! of it (see [`crate::det`]), so a test can tell which request a response
//! belongs to.

use serde_json::{json, Value};

use crate::det;

/// Completion tokens assumed when the request sets no `max_tokens`.
pub(crate) const DEFAULT_COMPLETION_TOKENS: u64 = 16;

/// One of the simulated POST endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Score,
    Rerank,
    Responses,
}

impl Endpoint {
    /// The URL path the endpoint is served at.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Score => "/v1/score",
            Endpoint::Rerank => "/v1/rerank",
            Endpoint::Responses => "/v1/responses",
        }
    }
}

/// A validated request: its success body plus the token counts that drive the
/// latency model and the metrics.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) body: Value,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
}

/// Builds the success body for `req` (already known to name `model`).
/// `Err` carries a 400 message for a malformed request.
pub(crate) fn build(endpoint: Endpoint, req: &Value, model: &str) -> Result<Prepared, String> {
    match endpoint {
        Endpoint::Chat => chat(req, model),
        Endpoint::Completions => completions(req, model),
        Endpoint::Embeddings => embeddings(req, model),
        Endpoint::Score => score(req, model),
        Endpoint::Rerank => rerank(req, model),
        Endpoint::Responses => responses(req, model),
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix time in seconds, as used for `created` fields.
pub(crate) fn created() -> u64 {
    now_unix()
}

/// `max_completion_tokens`, else `max_tokens`, else the default.
fn completion_budget(req: &Value) -> u64 {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_COMPLETION_TOKENS)
}

/// The text of a chat message `content`: a string, or the text parts of an
/// array joined with `\n`; anything else is empty.
fn message_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                Value::Object(o) => o.get("text").and_then(Value::as_str),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Normalises an OpenAI "prompt"/"input" value into a list of texts: a string,
/// an array of strings, an array of token ids (one text, ids joined by
/// spaces) or an array of such arrays.
fn text_list(v: &Value, field: &str) -> Result<Vec<String>, String> {
    fn ids(arr: &[Value]) -> Option<String> {
        arr.iter().map(|x| x.as_i64().map(|i| i.to_string())).collect::<Option<Vec<_>>>().map(|v| v.join(" "))
    }
    let bad = || format!("{field}: expected a string or an array of strings or token ids");
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if items.is_empty() => Err(format!("{field}: must not be empty")),
        Value::Array(items) if items.iter().all(Value::is_number) => ids(items).map(|s| vec![s]).ok_or_else(bad),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Some(s.clone()),
                Value::Array(a) => ids(a),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn required<'a>(req: &'a Value, field: &str) -> Result<&'a Value, String> {
    match req.get(field) {
        Some(Value::Null) | None => Err(format!("{field}: Field required")),
        Some(v) => Ok(v),
    }
}

fn chat(req: &Value, model: &str) -> Result<Prepared, String> {
    let messages = required(req, "messages")?
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or("messages: expected a non-empty array")?;
    let texts: Vec<String> = messages.iter().map(|m| message_text(m.get("content"))).collect();
    let prompt_tokens = det::prompt_tokens(texts.iter().map(String::as_str));
    let completion_tokens = completion_budget(req);
    let content = format!("echo: {}", texts.last().map(String::as_str).unwrap_or(""));
    let body = json!({
        "id": format!("chatcmpl-{}", det::random_hex32()),
        "object": "chat.completion",
        "created": created(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "tool_calls": []},
            "logprobs": null,
            "finish_reason": "stop",
            "stop_reason": null,
        }],
        "usage": usage(prompt_tokens, completion_tokens),
        "prompt_logprobs": null,
    });
    Ok(Prepared { body, prompt_tokens, completion_tokens })
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": null,
    })
}

fn completions(req: &Value, model: &str) -> Result<Prepared, String> {
    let prompts = text_list(required(req, "prompt")?, "prompt")?;
    let prompt_tokens = det::prompt_tokens(prompts.iter().map(String::as_str));
    // One choice per prompt, each generating the full budget (as vLLM does).
    let completion_tokens = completion_budget(req) * prompts.len() as u64;
    let choices: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "index": i,
                "text": format!("echo: {p}"),
                "logprobs": null,
                "finish_reason": "stop",
                "stop_reason": null,
                "prompt_logprobs": null,
            })
        })
        .collect();
    let body = json!({
        "id": format!("cmpl-{}", det::random_hex32()),
        "object": "text_completion",
        "created": created(),
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    });
    Ok(Prepared { body, prompt_tokens, completion_tokens })
}

fn embeddings(req: &Value, model: &str) -> Result<Prepared, String> {
    let inputs = text_list(required(req, "input")?, "input")?;
    let prompt_tokens = det::prompt_tokens(inputs.iter().map(String::as_str));
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": det::embedding_for(s)}))
        .collect();
    let body = json!({
        "id": format!("embd-{}", det::random_hex32()),
        "object": "list",
        "created": created(),
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0, "prompt_tokens_details": null},
    });
    Ok(Prepared { body, prompt_tokens, completion_tokens: 0 })
}

/// A `text_1`/`text_2` value: a string or an array of strings.
fn str_or_list(req: &Value, field: &str) -> Result<(Vec<String>, bool), String> {
    match required(req, field)? {
        Value::String(s) => Ok((vec![s.clone()], false)),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(|v| (v, true))
            .ok_or_else(|| format!("{field}: expected a string or an array of strings")),
        _ => Err(format!("{field}: expected a string or a non-empty array of strings")),
    }
}

fn score(req: &Value, model: &str) -> Result<Prepared, String> {
    let (t1, _) = str_or_list(req, "text_1")?;
    let (t2, _) = str_or_list(req, "text_2")?;
    // vLLM pairs 1:1, 1:N or N:N.
    let pairs: Vec<(&str, &str)> = if t1.len() == 1 {
        t2.iter().map(|b| (t1[0].as_str(), b.as_str())).collect()
    } else if t1.len() == t2.len() {
        t1.iter().zip(&t2).map(|(a, b)| (a.as_str(), b.as_str())).collect()
    } else {
        return Err("text_1 and text_2 must have the same length, or text_1 must be a single text".into());
    };
    let prompt_tokens = det::prompt_tokens(pairs.iter().flat_map(|(a, b)| [*a, *b]));
    let data: Vec<Value> = pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| json!({"index": i, "object": "score", "score": det::score_for(a, b)}))
        .collect();
    let body = json!({
        "id": format!("score-{}", det::random_hex32()),
        "object": "list",
        "created": created(),
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0, "prompt_tokens_details": null},
    });
    Ok(Prepared { body, prompt_tokens, completion_tokens: 0 })
}

fn rerank(req: &Value, model: &str) -> Result<Prepared, String> {
    let query = required(req, "query")?.as_str().ok_or("query: expected a string")?;
    let documents: Vec<&str> = required(req, "documents")?
        .as_array()
        .ok_or("documents: expected an array")?
        .iter()
        .map(|d| d.as_str().or_else(|| d.get("text").and_then(Value::as_str)))
        .collect::<Option<Vec<_>>>()
        .ok_or("documents: expected strings or {\"text\": ...} objects")?;
    let prompt_tokens = det::prompt_tokens(documents.iter().flat_map(|d| [query, *d]));
    let mut scored: Vec<(usize, &str, f64)> =
        documents.iter().enumerate().map(|(i, d)| (i, *d, det::score_for(query, d))).collect();
    // vLLM sorts by relevance, best first, and keeps `top_n` when given.
    scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    if let Some(n) = req.get("top_n").and_then(Value::as_u64).filter(|n| *n > 0) {
        scored.truncate(n as usize);
    }
    let results: Vec<Value> =
        scored.iter().map(|(i, d, s)| json!({"index": i, "document": {"text": d}, "relevance_score": s})).collect();
    let body = json!({
        "id": format!("rerank-{}", det::random_hex32()),
        "model": model,
        "usage": {"total_tokens": prompt_tokens},
        "results": results,
    });
    Ok(Prepared { body, prompt_tokens, completion_tokens: 0 })
}

/// The texts of a Responses API `input`: a string, or an array of messages (`{"role",
/// "content"}`, content a string or parts) and other items (their `text`, if any).
fn response_input(req: &Value) -> Result<Vec<String>, String> {
    match required(req, "input")? {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => Ok(items
            .iter()
            .map(|item| match item.get("content") {
                Some(content) => message_text(Some(content)),
                None => item.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
            })
            .collect()),
        _ => Err("input: expected a string or a non-empty array of input items".into()),
    }
}

/// OpenAI's Responses API as vLLM answers it (0.32): a `response` object whose `output` holds
/// one assistant message, with `usage` in the Responses API's names (`input_tokens`,
/// `output_tokens`). Without a response store (vLLM's default) `background` is refused, as vLLM
/// does; `store` is accepted and ignored.
fn responses(req: &Value, model: &str) -> Result<Prepared, String> {
    let texts = response_input(req)?;
    if req.get("background").and_then(Value::as_bool) == Some(true) {
        return Err("This vLLM engine does not support `store=True` and therefore does not support the background \
                    mode. To enable these features, set the environment variable \
                    `VLLM_ENABLE_RESPONSES_API_STORE=1` when launching the vLLM server."
            .into());
    }
    let mut all: Vec<&str> = texts.iter().map(String::as_str).collect();
    if let Some(instructions) = req.get("instructions").and_then(Value::as_str) {
        all.push(instructions);
    }
    let prompt_tokens = det::prompt_tokens(all);
    let completion_tokens = req.get("max_output_tokens").and_then(Value::as_u64).unwrap_or(DEFAULT_COMPLETION_TOKENS);
    let text = format!("echo: {}", texts.last().map(String::as_str).unwrap_or(""));
    let body = json!({
        "id": format!("resp_{}", &det::random_hex32()[..16]),
        "created_at": created(),
        "incomplete_details": null,
        "instructions": req.get("instructions").cloned().unwrap_or(Value::Null),
        "metadata": req.get("metadata").cloned().unwrap_or(Value::Null),
        "model": model,
        "object": "response",
        "output": [{
            "id": format!("msg_{}", &det::random_hex32()[..16]),
            "content": [{"annotations": [], "text": text, "type": "output_text", "logprobs": null}],
            "role": "assistant",
            "status": "completed",
            "type": "message",
        }],
        "parallel_tool_calls": true,
        "temperature": req.get("temperature").cloned().unwrap_or(json!(1.0)),
        "tool_choice": "none",
        "tools": [],
        "top_p": req.get("top_p").cloned().unwrap_or(json!(1.0)),
        "background": false,
        "max_output_tokens": req.get("max_output_tokens").cloned().unwrap_or(Value::Null),
        "previous_response_id": null,
        "reasoning": null,
        "service_tier": "auto",
        "status": "completed",
        "text": null,
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0, "input_tokens_per_turn": [],
                                     "cached_tokens_per_turn": []},
            "output_tokens": completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0, "output_tokens_per_turn": [],
                                      "tool_output_tokens_per_turn": []},
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "user": null,
    });
    Ok(Prepared { body, prompt_tokens, completion_tokens })
}

/// The two server-sent-event payloads of a streamed answer (`"stream": true` on the chat or
/// completions endpoint), made from its whole `body`: the first token's chunk (the role and
/// the first word), then the rest with the finish reason. vLLM sends one chunk per token; two
/// carry what a client measures (the time to the first token, and the end).
pub(crate) fn stream_chunks(endpoint: Endpoint, body: &Value) -> (Value, Value) {
    let chat = endpoint == Endpoint::Chat;
    let text = if chat { &body["choices"][0]["message"]["content"] } else { &body["choices"][0]["text"] };
    let text = text.as_str().unwrap_or_default();
    let split = text.find(' ').map(|i| i + 1).unwrap_or(text.len());
    let (head, tail) = text.split_at(split);
    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
    let chunk = |choice: Value| json!({"id": body["id"], "object": object, "created": body["created"], "model": body["model"], "choices": [choice]});
    if chat {
        (
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": head}, "logprobs": null, "finish_reason": null}),
            ),
            chunk(
                json!({"index": 0, "delta": {"content": tail}, "logprobs": null, "finish_reason": "stop", "stop_reason": null}),
            ),
        )
    } else {
        (
            chunk(json!({"index": 0, "text": head, "logprobs": null, "finish_reason": null})),
            chunk(json!({"index": 0, "text": tail, "logprobs": null, "finish_reason": "stop", "stop_reason": null})),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_joins_text_parts_of_last_message() {
        let req = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "c"}]}
        ], "max_tokens": 5});
        let p = build(Endpoint::Chat, &req, "m").unwrap();
        assert_eq!(p.body["choices"][0]["message"]["content"], "echo: a b\nc");
        assert_eq!(p.prompt_tokens, 5);
        assert_eq!(p.completion_tokens, 5);
        assert_eq!(p.body["usage"]["total_tokens"], 10);
    }

    #[test]
    fn completions_prompt_forms() {
        let p = build(Endpoint::Completions, &json!({"prompt": ["x y", "z"]}), "m").unwrap();
        assert_eq!(p.body["choices"][0]["text"], "echo: x y");
        assert_eq!(p.body["choices"][1]["text"], "echo: z");
        let p = build(Endpoint::Completions, &json!({"prompt": [1, 2, 3], "max_completion_tokens": 2}), "m").unwrap();
        assert_eq!(p.body["choices"][0]["text"], "echo: 1 2 3");
        assert_eq!(p.completion_tokens, 2);
        assert!(build(Endpoint::Completions, &json!({}), "m").is_err());
    }

    #[test]
    fn rerank_sorts_and_truncates() {
        let req = json!({"query": "q", "documents": ["a", "b", "c"], "top_n": 2});
        let p = build(Endpoint::Rerank, &req, "m").unwrap();
        let r = p.body["results"].as_array().unwrap();
        assert_eq!(r.len(), 2);
        assert!(r[0]["relevance_score"].as_f64() >= r[1]["relevance_score"].as_f64());
        let i = r[0]["index"].as_u64().unwrap() as usize;
        let doc = ["a", "b", "c"][i];
        assert_eq!(r[0]["document"]["text"], doc);
        assert_eq!(r[0]["relevance_score"].as_f64().unwrap(), det::score_for("q", doc));
    }

    #[test]
    fn responses_answer_in_vllms_shape() {
        let req = json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a b"}]}],
                         "max_output_tokens": 3});
        let p = build(Endpoint::Responses, &req, "m").unwrap();
        assert_eq!(p.body["object"], "response");
        assert_eq!(p.body["status"], "completed");
        assert_eq!(p.body["output"][0]["content"][0]["text"], "echo: a b");
        assert_eq!(p.body["usage"]["output_tokens"], 3);
        assert_eq!(p.body["usage"]["input_tokens"], 2);
        assert_eq!(p.body["usage"]["total_tokens"], 5);
        assert!(p.body["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(build(Endpoint::Responses, &json!({"input": "x"}), "m").unwrap().completion_tokens, 16);
        assert!(build(Endpoint::Responses, &json!({}), "m").unwrap_err().contains("input"));
        let background = build(Endpoint::Responses, &json!({"input": "x", "background": true}), "m");
        assert!(background.unwrap_err().contains("VLLM_ENABLE_RESPONSES_API_STORE"));
    }
}
