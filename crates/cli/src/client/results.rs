//! Results while a batch runs (`vllm-batch batches results`, `submit --wait --stream-output`):
//! reads `GET /v1/batches/{id}/output` (or `/errors`) from a cursor and appends what arrives.
//!
//! Written to a file, the cursor is kept beside it in `FILE.cursor`, with the file's length
//! after the append it belongs to. The order is: append and sync the lines, then replace the
//! sidecar. A run that is killed in between leaves lines past the recorded length; the next run
//! cuts the file back to that length and asks again from the recorded cursor, so a stop and a
//! restart neither lose nor repeat a line. Once the batch has ended and everything is in, the
//! file equals the batch's output (error) file and the sidecar is removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::http::{is_transient, segment, Api, CALL_TIMEOUT};

/// How long one long poll waits on the server for new lines.
const LONG_POLL: &str = "30s";
/// How long following keeps trying through transient errors (server restarting, 5xx, 429).
const RIDE_OUT: Duration = Duration::from_secs(120);

/// Which of the batch's files to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Output,
    Errors,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Output => "output",
            Kind::Errors => "errors",
        }
    }
}

/// What `FILE.cursor` records.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sidecar {
    batch_id: String,
    kind: Kind,
    /// Pass back as `after`.
    cursor: String,
    /// The file's length once the lines up to `cursor` were appended.
    length: u64,
}

/// One answer of the endpoint.
struct Page {
    body: Vec<u8>,
    next: String,
    incomplete: bool,
}

async fn fetch(api: &Api, id: &str, kind: Kind, after: Option<&str>, wait: bool) -> Result<Page> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = after {
        query.push(("after", a));
    }
    if wait {
        query.push(("wait", LONG_POLL));
    }
    let path = format!("/batches/{}/{}", segment(id), kind.path());
    let req = api.request(Method::GET, &path).query(&query).timeout(CALL_TIMEOUT);
    let resp = api.send(req).await?;
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(next) = header("x-next-cursor") else {
        bail!("the server did not answer an x-next-cursor (is it older?)")
    };
    let incomplete = header("x-incomplete").as_deref() != Some("false");
    let body = resp.bytes().await.map_err(|e| super::http::Unreachable::new(&api.url(&path), &e))?.to_vec();
    Ok(Page { body, next, incomplete })
}

/// Where lines go.
enum Sink {
    Stdout(tokio::io::Stdout),
    File { file: tokio::fs::File, path: PathBuf, sidecar: PathBuf, length: u64 },
}

impl Sink {
    /// `path`'s sink, and the cursor to resume after: the sidecar's (the file cut back to its
    /// length) when it belongs to this batch and file, otherwise none (the file started anew).
    async fn open(path: &Path, id: &str, kind: Kind) -> Result<(Sink, Option<String>)> {
        let sidecar = cursor_path(path);
        let resumed = match tokio::fs::read(&sidecar).await {
            Ok(raw) => {
                let s: Sidecar = serde_json::from_slice(&raw)
                    .with_context(|| format!("{} is not a results cursor", sidecar.display()))?;
                if s.batch_id != id || s.kind != kind {
                    bail!(
                        "{} holds the {} of {}, not the {} of {id}: choose another file",
                        path.display(),
                        s.kind.path(),
                        s.batch_id,
                        kind.path()
                    );
                }
                Some(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", sidecar.display())),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        // Lines past the recorded length were appended by a run that stopped before recording
        // their cursor: they will come again.
        let length = resumed.as_ref().map_or(0, |s| s.length);
        file.set_len(length).await.with_context(|| format!("truncating {}", path.display()))?;
        let mut file = file;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(length)).await?;
        let sink = Sink::File { file, path: path.to_path_buf(), sidecar, length };
        Ok((sink, resumed.map(|s| s.cursor)))
    }

    /// Appends `body` and records `cursor` as the position after it.
    async fn append(&mut self, body: &[u8], cursor: &str, id: &str, kind: Kind) -> Result<()> {
        match self {
            Sink::Stdout(out) => {
                out.write_all(body).await.context("writing to stdout")?;
                out.flush().await.context("writing to stdout")
            }
            Sink::File { file, path, sidecar, length } => {
                if !body.is_empty() {
                    file.write_all(body).await.with_context(|| format!("writing {}", path.display()))?;
                    file.sync_data().await.with_context(|| format!("writing {}", path.display()))?;
                    *length += body.len() as u64;
                }
                let record = Sidecar { batch_id: id.into(), kind, cursor: cursor.into(), length: *length };
                // Replaced whole (a rename), so a kill never leaves half a sidecar.
                let tmp = sidecar.with_extension("cursor.tmp");
                tokio::fs::write(&tmp, serde_json::to_vec(&record)?)
                    .await
                    .with_context(|| format!("writing {}", tmp.display()))?;
                tokio::fs::rename(&tmp, &sidecar).await.with_context(|| format!("writing {}", sidecar.display()))
            }
        }
    }

    /// Everything is in: the sidecar has nothing left to resume.
    async fn complete(self) -> Result<u64> {
        match self {
            Sink::Stdout(_) => Ok(0),
            Sink::File { sidecar, length, .. } => {
                match tokio::fs::remove_file(&sidecar).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", sidecar.display()))
                    }
                    _ => {}
                }
                Ok(length)
            }
        }
    }
}

/// `FILE.cursor`.
pub fn cursor_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".cursor");
    path.with_file_name(name)
}

/// How reading ended.
pub enum Streamed {
    /// The batch has ended and every line is in (the file's length).
    Complete(u64),
    /// Without `follow`: what exists now is in; more will come.
    SoFar,
}

/// Reads the batch's `kind` lines into `dest` (a file, resumable; `None`: stdout). With
/// `follow`, long-polls until the batch has ended and everything is in; without, stops once
/// nothing more is available right now.
pub async fn stream(api: &Api, id: &str, kind: Kind, dest: Option<&Path>, follow: bool) -> Result<Streamed> {
    let (mut sink, mut cursor) = match dest {
        Some(path) => Sink::open(path, id, kind).await?,
        None => (Sink::Stdout(tokio::io::stdout()), None),
    };
    let mut failing_since: Option<Instant> = None;
    loop {
        let page = match fetch(api, id, kind, cursor.as_deref(), follow).await {
            Ok(page) => page,
            Err(e)
                if follow
                    && is_transient(&e)
                    && failing_since.get_or_insert_with(Instant::now).elapsed() < RIDE_OUT =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.context(format!("reading the {} of {id}", kind.path()))),
        };
        failing_since = None;
        sink.append(&page.body, &page.next, id, kind).await?;
        cursor = Some(page.next);
        if !page.incomplete {
            return Ok(Streamed::Complete(sink.complete().await?));
        }
        if !follow && page.body.is_empty() {
            return Ok(Streamed::SoFar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_sits_beside_the_file() {
        assert_eq!(cursor_path(Path::new("/d/out.jsonl")), PathBuf::from("/d/out.jsonl.cursor"));
    }
}
