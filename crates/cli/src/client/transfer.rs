//! Moving file bodies: the streaming multipart upload (the file is read as it is sent, never
//! whole into memory, with a byte bar), and streaming downloads to a path or to stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::io::{InspectReader, ReaderStream};

use super::http::{segment, Api, Unreachable};
use super::progress::Ui;

/// Read size of the upload stream.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// Uploads `path` with purpose `batch` under `idempotency_key` and returns the File object.
pub async fn upload(api: &Api, path: &Path, ui: &Ui, idempotency_key: &str) -> Result<Value> {
    let file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().await.with_context(|| format!("reading {}", path.display()))?.len();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "input.jsonl".into());
    let bar = ui.bytes_bar(Some(len), format!("uploading {name}"));
    // The bar counts bytes as the body stream reads them: reads follow the socket's pace.
    let counted = {
        let bar = bar.clone();
        InspectReader::new(file, move |chunk: &[u8]| bar.inc(chunk.len() as u64))
    };
    let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(counted, UPLOAD_CHUNK));
    let part = Part::stream_with_length(body, len).file_name(name).mime_str("application/jsonl")?;
    let form = Form::new().text("purpose", "batch").part("file", part);
    let req = api.request(Method::POST, "/files").header(super::http::IDEMPOTENCY_KEY, idempotency_key);
    let uploaded = api.json(req.multipart(form)).await;
    bar.finish_and_clear();
    uploaded.with_context(|| format!("uploading {}", path.display()))
}

/// Writes file `id`'s content to `dest`, through `dest` + `.part` renamed once complete, so an
/// interrupted download never looks finished. Returns the bytes written.
pub async fn download_to_path(api: &Api, id: &str, dest: &Path, ui: &Ui) -> Result<u64> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;
    }
    let part = part_path(dest);
    let mut file = tokio::fs::File::create(&part).await.with_context(|| format!("creating {}", part.display()))?;
    let written = match copy_content(api, id, &mut file, ui, &dest.display().to_string()).await {
        Ok(n) => n,
        Err(e) => {
            drop(file);
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    file.sync_all().await.with_context(|| format!("writing {}", part.display()))?;
    drop(file);
    tokio::fs::rename(&part, dest)
        .await
        .with_context(|| format!("renaming {} to {}", part.display(), dest.display()))?;
    Ok(written)
}

/// Writes file `id`'s content to stdout.
pub async fn download_to_stdout(api: &Api, id: &str) -> Result<u64> {
    let quiet = Ui { bars: false, can_ask: false, json: true };
    let mut out = tokio::io::stdout();
    let n = copy_content(api, id, &mut out, &quiet, "stdout").await?;
    out.flush().await.context("writing to stdout")?;
    Ok(n)
}

async fn copy_content(
    api: &Api,
    id: &str,
    out: &mut (impl AsyncWrite + Unpin),
    ui: &Ui,
    dest_name: &str,
) -> Result<u64> {
    let path = format!("/files/{}/content", segment(id));
    let mut resp = api.send(api.request(Method::GET, &path)).await.with_context(|| format!("downloading {id}"))?;
    let bar = ui.bytes_bar(resp.content_length(), format!("downloading {id} to {dest_name}"));
    let mut written = 0u64;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                bar.abandon();
                return Err(
                    anyhow::Error::new(Unreachable::new(&api.url(&path), &e)).context(format!("downloading {id}"))
                );
            }
        };
        out.write_all(&chunk).await.with_context(|| format!("writing {dest_name}"))?;
        written += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(written)
}

/// Where a download is written until it is complete.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}
