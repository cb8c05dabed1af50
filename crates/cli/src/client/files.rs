//! `vllm-batch files list|get|download|delete`.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::http::{segment, Api};
use super::progress::Ui;
use super::wire::{view, File, Page};
use super::{render, transfer, FilesCommand};

pub async fn run(cmd: FilesCommand) -> Result<()> {
    match cmd {
        FilesCommand::List { purpose, limit, after, connect } => {
            let mut query = Vec::new();
            if let Some(p) = purpose {
                query.push(("purpose", p));
            }
            if let Some(l) = limit {
                query.push(("limit", l.to_string()));
            }
            if let Some(a) = after {
                query.push(("after", a));
            }
            let raw = Api::new(&connect)?.get("/files", &query).await?;
            let ui = Ui::new(connect.json);
            if ui.json {
                return print_json(&raw);
            }
            let page: Page = view(&raw, "list")?;
            let files = page.data.iter().map(|v| view(v, "file")).collect::<Result<Vec<File>>>()?;
            if files.is_empty() {
                ui.note("No files.");
            } else {
                print!("{}", render::file_table(&files));
            }
            if page.has_more {
                if let Some(last) = files.last() {
                    eprintln!("(more: --after {} for the next page)", last.id);
                }
            }
        }
        FilesCommand::Get { id, connect } => {
            let raw = Api::new(&connect)?.get(&format!("/files/{}", segment(&id)), &[]).await?;
            if connect.json {
                return print_json(&raw);
            }
            print!("{}", render::file_details(&view(&raw, "file")?));
        }
        FilesCommand::Download { id, output, connect } => {
            let api = Api::new(&connect)?;
            match output.filter(|p| p.as_os_str() != "-") {
                None => {
                    transfer::download_to_stdout(&api, &id).await?;
                }
                Some(path) => {
                    let ui = Ui::new(connect.json);
                    let bytes = transfer::download_to_path(&api, &id, &path, &ui).await?;
                    saved(&id, &path, bytes, &ui);
                }
            }
        }
        FilesCommand::Delete { id, connect } => {
            let raw = Api::new(&connect)?.delete(&format!("/files/{}", segment(&id))).await?;
            if connect.json {
                return print_json(&raw);
            }
            let deleted = raw["deleted"].as_bool().unwrap_or(false);
            println!("{} {}", raw["id"].as_str().unwrap_or(&id), if deleted { "deleted" } else { "not deleted" });
        }
    }
    Ok(())
}

fn saved(id: &str, path: &Path, bytes: u64, ui: &Ui) {
    ui.note(format!("Saved {id} to {} ({})", path.display(), render::size(bytes)));
}

fn print_json(raw: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(raw)?);
    Ok(())
}
