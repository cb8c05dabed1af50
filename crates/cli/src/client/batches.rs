//! `vllm-batch batches list|get|cancel|retry|wait`.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{json, Value};

use super::follow::{follow_and_download, Targets};
use reqwest::Method;

use super::http::{segment, Api, CALL_TIMEOUT, IDEMPOTENCY_KEY};
use super::progress::Ui;
use super::wire::{view, Batch, Page};
use super::{render, results, BatchesCommand};

/// Runs the command and returns the exit code.
pub async fn run(cmd: BatchesCommand) -> Result<i32> {
    match cmd {
        BatchesCommand::List { limit, after, all, connect } => {
            let ui = Ui::new(connect.json);
            list(&Api::new(&connect)?, limit, after, all, &ui).await?;
        }
        BatchesCommand::Get { id, connect } => {
            let raw = Api::new(&connect)?.get(&format!("/batches/{}", segment(&id)), &[]).await?;
            print_batch(&raw, &Ui::new(connect.json))?;
        }
        BatchesCommand::Cancel { id, connect } => {
            let raw = Api::new(&connect)?.post(&format!("/batches/{}/cancel", segment(&id)), &json!({})).await?;
            let ui = Ui::new(connect.json);
            if ui.json {
                println!("{}", serde_json::to_string_pretty(&raw)?);
            } else {
                let b: Batch = view(&raw, "batch")?;
                println!("{} {}", b.id, b.status);
            }
        }
        BatchesCommand::Retry { id, include_invalid_requests, wait, output, errors, poll_interval, connect } => {
            let ui = Ui::new(connect.json);
            let api = Api::new(&connect)?;
            let key = uuid::Uuid::new_v4().simple().to_string();
            let body = json!({"include_invalid_requests": include_invalid_requests});
            let req = api
                .request(Method::POST, &format!("/batches/{}/retry", segment(&id)))
                .header(IDEMPOTENCY_KEY, key)
                .json(&body)
                .timeout(CALL_TIMEOUT);
            let raw = api.json(req).await?;
            let b: Batch = view(&raw, "batch")?;
            if !wait {
                if ui.json {
                    println!("{}", serde_json::to_string_pretty(&raw)?);
                } else {
                    ui.note(format!("Created batch {} retrying the failed lines of {id}", b.id));
                    println!("{}", b.id);
                }
                return Ok(0);
            }
            ui.note(format!("Created batch {} retrying the failed lines of {id}; following it", b.id));
            let targets = Targets {
                output: output.unwrap_or_else(|| PathBuf::from(format!("{}.output.jsonl", b.id))),
                errors: errors.unwrap_or_else(|| PathBuf::from(format!("{}.errors.jsonl", b.id))),
                stream_output: false,
            };
            return follow_and_download(&api, raw, &targets, poll_interval, &ui).await;
        }
        BatchesCommand::Results { id, errors, follow, output, connect } => {
            let api = Api::new(&connect)?;
            let kind = if errors { results::Kind::Errors } else { results::Kind::Output };
            let streamed = results::stream(&api, &id, kind, output.as_deref(), follow).await?;
            if let (Some(path), results::Streamed::Complete(bytes)) = (&output, &streamed) {
                Ui::new(connect.json).note(format!("{} is complete ({})", path.display(), render::size(*bytes)));
            }
        }
        BatchesCommand::Wait { id, output, errors, poll_interval, connect } => {
            let ui = Ui::new(connect.json);
            let api = Api::new(&connect)?;
            let raw = api.get(&format!("/batches/{}", segment(&id)), &[]).await?;
            let targets = Targets {
                output: output.unwrap_or_else(|| PathBuf::from(format!("{id}.output.jsonl"))),
                errors: errors.unwrap_or_else(|| PathBuf::from(format!("{id}.errors.jsonl"))),
                stream_output: false,
            };
            return follow_and_download(&api, raw, &targets, poll_interval, &ui).await;
        }
    }
    Ok(0)
}

/// One page, or with `all` every page, merged into one list object for `--json`.
async fn list(api: &Api, limit: u32, mut after: Option<String>, all: bool, ui: &Ui) -> Result<()> {
    let mut data: Vec<Value> = Vec::new();
    let mut first_page: Option<Value> = None;
    let mut has_more;
    loop {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let raw = api.get("/batches", &query).await?;
        let page: Page = view(&raw, "list")?;
        has_more = page.has_more;
        data.extend(page.data);
        first_page.get_or_insert(raw);
        // Stop on a server that says "more" without moving forward.
        let moved = page.last_id.is_some() && page.last_id != after;
        if !(all && has_more && moved) {
            break;
        }
        after = page.last_id;
    }
    if ui.json {
        let out = if all {
            let id = |v: Option<&Value>| v.and_then(|b| b["id"].as_str()).map(str::to_string);
            json!({"object": "list", "first_id": id(data.first()), "last_id": id(data.last()), "data": data, "has_more": has_more})
        } else {
            first_page.unwrap_or(Value::Null)
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let batches = data.iter().map(|v| view(v, "batch")).collect::<Result<Vec<Batch>>>()?;
    if batches.is_empty() {
        ui.note("No batches.");
        return Ok(());
    }
    print!("{}", render::batch_table(&batches));
    if has_more && !all {
        if let Some(last) = batches.last() {
            eprintln!("(more: --after {} for the next page, or --all)", last.id);
        }
    }
    Ok(())
}

fn print_batch(raw: &Value, ui: &Ui) -> Result<()> {
    if ui.json {
        println!("{}", serde_json::to_string_pretty(raw)?);
    } else {
        print!("{}", render::batch_details(&view(raw, "batch")?));
    }
    Ok(())
}
