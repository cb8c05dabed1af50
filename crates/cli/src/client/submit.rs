//! `vllm-batch submit`: uploads the input file (streamed, with a byte bar), creates the batch,
//! and either prints its id or, with `--wait`, follows it and downloads its files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::follow::{follow_and_download, Targets};
use super::http::{Api, Unreachable, CALL_TIMEOUT, IDEMPOTENCY_KEY};
use super::progress::Ui;
use super::wire::{view, Batch, File};
use super::{render, transfer, SubmitArgs};

/// Runs the command and returns the exit code.
pub async fn run(args: SubmitArgs) -> Result<i32> {
    let ui = Ui::new(args.connect.json);
    let api = Api::new(&args.connect)?;
    let key = args.idempotency_key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());

    let file: File = view(&transfer::upload(&api, &args.input, &ui, &format!("{key}-file")).await?, "file")?;
    ui.note(format!("Uploaded {} as {} ({})", args.input.display(), file.id, render::size(file.bytes)));

    let mut body = json!({
        "input_file_id": file.id,
        "endpoint": args.endpoint,
        "completion_window": args.completion_window,
    });
    if !args.metadata.is_empty() {
        let metadata: Map<String, Value> = args.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        body["metadata"] = Value::Object(metadata);
    }
    let raw = create(&api, &body, &format!("{key}-batch"))
        .await
        .with_context(|| format!("creating the batch (the input stays uploaded as {})", file.id))?;
    let batch: Batch = view(&raw, "batch")?;

    if !args.wait {
        if ui.json {
            println!("{}", serde_json::to_string_pretty(&raw)?);
        } else {
            ui.note(format!(
                "Created batch {} ({}); follow it with: vllm-batch batches wait {}",
                batch.id, batch.status, batch.id
            ));
            println!("{}", batch.id);
        }
        return Ok(0);
    }
    ui.note(format!("Created batch {}; following it (Ctrl-C to stop or cancel)", batch.id));
    let targets = Targets {
        output: args.output.unwrap_or_else(|| beside(&args.input, "output")),
        errors: args.errors.unwrap_or_else(|| beside(&args.input, "errors")),
        stream_output: args.stream_output,
    };
    follow_and_download(&api, raw, &targets, args.poll_interval, &ui).await
}

/// Creates the batch under an `Idempotency-Key`, retrying (with the same key, so never twice)
/// when the connection fails before an answer arrives.
async fn create(api: &Api, body: &Value, key: &str) -> Result<Value> {
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        let req = api.request(Method::POST, "/batches").header(IDEMPOTENCY_KEY, key).json(body).timeout(CALL_TIMEOUT);
        match api.json(req).await {
            Err(e) if attempt < ATTEMPTS && e.downcast_ref::<Unreachable>().is_some() => {
                tokio::time::sleep(Duration::from_secs(attempt as u64)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `<dir>/<stem>.<kind>.jsonl` for input `<dir>/<stem>.<ext>`.
fn beside(input: &Path, kind: &str) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "batch".into());
    input.with_file_name(format!("{stem}.{kind}.jsonl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_land_next_to_the_input() {
        assert_eq!(beside(Path::new("/d/requests.jsonl"), "output"), PathBuf::from("/d/requests.output.jsonl"));
        assert_eq!(beside(Path::new("eval.v2.jsonl"), "errors"), PathBuf::from("eval.v2.errors.jsonl"));
        assert_eq!(beside(Path::new("plain"), "output"), PathBuf::from("plain.output.jsonl"));
    }
}
