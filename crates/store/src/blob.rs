//! File bodies: the `FileStore` trait and its local-folder implementation.
//!
//! Writers stream into a temporary file and only appear under their key on `commit`, so a crash
//! or an aborted upload never leaves a half-written body behind a key.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use tokio::fs;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::Result;

/// A byte stream of a stored body.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A committed body, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    pub bytes: u64,
    /// When it was last written, Unix milliseconds.
    pub modified_ms: i64,
}

/// How long an uncommitted local write may sit untouched before it counts as abandoned (an
/// upload of a killed process): a live writer touches its file with every write.
pub const LOCAL_ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// A body being written; invisible under its key until `commit`.
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Makes the body visible under its key (replacing any previous one); returns its size.
    async fn commit(self: Box<Self>) -> Result<u64>;
}

/// Where file bodies live. Keys are built by `model::file_key` / `model::part_key` from
/// validated ids only.
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    async fn writer(&self, key: &str) -> Result<Box<dyn BlobWriter>>;
    /// A reader over the whole body.
    async fn reader(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>>;
    /// The whole body as a stream (for HTTP downloads).
    async fn stream(&self, key: &str) -> Result<ByteStream>;
    /// Bytes `start..end` of a body.
    async fn read_range(&self, key: &str, start: u64, end: u64) -> Result<Vec<u8>>;
    /// Removes a body; a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Removes every body under a prefix (a folder for local storage).
    async fn delete_prefix(&self, prefix: &str) -> Result<()>;
    /// Proves the store accepts writes (readiness).
    async fn check_writable(&self) -> Result<()>;
    /// Every committed body whose key starts with `prefix` (a folder for local storage), in no
    /// particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>>;
    /// Removes writes begun but never committed nor aborted (their process was killed) that
    /// have been idle longer than `older_than` (`None`: the store's own default — an hour for
    /// the local folder, a day for an object store's multipart uploads), at most `limit` of
    /// them. Returns how many it removed. A live writer is never touched.
    async fn collect_abandoned(&self, older_than: Option<Duration>, limit: usize) -> Result<usize>;
}

/// Unix milliseconds of a file time.
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Bodies as plain files under a root folder.
pub struct LocalFileStore {
    root: PathBuf,
}

impl LocalFileStore {
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("tmp")).await?;
        Ok(LocalFileStore { root })
    }

    /// Removes a temporary file unless a live writer holds its lock (a writer's buffered data
    /// may leave its file's time stale; its lock is the proof of life).
    async fn remove_unlocked(&self, key: &str) -> Result<bool> {
        let path = self.path(key);
        tokio::task::spawn_blocking(move || {
            let file = match std::fs::File::open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                other => other?,
            };
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(false),
                other => other.map_err(std::io::Error::from)?,
            }
            remove_if_present(std::fs::remove_file(&path))?;
            Ok(true)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    fn path(&self, key: &str) -> PathBuf {
        // Keys come from validated ids; refuse anything that could climb out of the root anyway.
        debug_assert!(!key.split('/').any(|p| p == ".." || p.is_empty()));
        self.root.join(key)
    }
}

struct LocalWriter {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<BufWriter<fs::File>>,
    written: u64,
}

#[async_trait]
impl BlobWriter for LocalWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        let f = self.file.as_mut().expect("writer used after commit");
        f.write_all(data).await?;
        self.written += data.len() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64> {
        let mut f = self.file.take().expect("writer committed twice");
        f.flush().await?;
        f.get_mut().sync_all().await?;
        drop(f);
        if let Some(parent) = self.dest.parent() {
            fs::create_dir_all(parent).await?;
        }
        fs::rename(&self.tmp, &self.dest).await?;
        Ok(self.written)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Not committed: the temporary file is garbage.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[async_trait]
impl FileStore for LocalFileStore {
    async fn writer(&self, key: &str) -> Result<Box<dyn BlobWriter>> {
        let tmp = self.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
        // Locked for as long as this writer lives (the lock dies with the process): the
        // collector of abandoned uploads skips a locked file, whatever its age.
        let file = fs::File::create(&tmp).await?.into_std().await;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(std::io::Error::from)?;
        let file = fs::File::from_std(file);
        Ok(Box::new(LocalWriter {
            tmp,
            dest: self.path(key),
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            written: 0,
        }))
    }

    async fn reader(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(Box::new(fs::File::open(self.path(key)).await?))
    }

    async fn stream(&self, key: &str) -> Result<ByteStream> {
        let file = fs::File::open(self.path(key)).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)))
    }

    async fn read_range(&self, key: &str, start: u64, end: u64) -> Result<Vec<u8>> {
        let mut file = fs::File::open(self.path(key)).await?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let mut buf = vec![0; (end - start) as usize];
        file.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        remove_if_present(fs::remove_file(self.path(key)).await)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        remove_if_present(fs::remove_dir_all(self.path(prefix.trim_end_matches('/'))).await)
    }

    async fn check_writable(&self) -> Result<()> {
        let mut w = self.writer("tmp/.ready-check").await?;
        w.write(b"ok").await?;
        w.commit().await?;
        fs::remove_file(self.path("tmp/.ready-check")).await?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>> {
        let root = self.root.clone();
        let dir = self.path(prefix.trim_end_matches('/'));
        let listed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &dir, &mut out).map(|()| out)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(listed)
    }

    async fn collect_abandoned(&self, older_than: Option<Duration>, limit: usize) -> Result<usize> {
        // Every writer streams into `tmp/` and renames on commit; a file left there and idle
        // past the age belongs to a process that died.
        let cutoff = unix_ms(SystemTime::now()) - older_than.unwrap_or(LOCAL_ABANDONED_AFTER).as_millis() as i64;
        let mut removed = 0;
        for blob in self.list("tmp").await? {
            if removed >= limit {
                break;
            }
            if blob.modified_ms <= cutoff && self.remove_unlocked(&blob.key).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The files under `dir` (recursively) as `BlobMeta`, keyed relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<BlobMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let meta = match entry.metadata() {
            // Removed while listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other?,
        };
        let path = entry.path();
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push(BlobMeta { key, bytes: meta.len(), modified_ms: meta.modified().map(unix_ms).unwrap_or(0) });
        }
    }
    Ok(())
}

fn remove_if_present(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn abandoned_writes_are_collected_and_live_writers_never() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFileStore::open(dir.path()).await.unwrap();
        // A live writer whose bytes still sit in its buffer: its file looks idle, its lock says not.
        let mut live = files.writer("files/a").await.unwrap();
        live.write(b"buffered").await.unwrap();
        // What a killed process left: a temporary file nobody holds.
        std::fs::write(dir.path().join("tmp/left-by-a-dead-process"), b"half").unwrap();
        // Younger than the default hour: nothing goes.
        assert_eq!(files.collect_abandoned(None, 10).await.unwrap(), 0);
        assert_eq!(files.collect_abandoned(Some(Duration::ZERO), 10).await.unwrap(), 1);
        assert!(!dir.path().join("tmp/left-by-a-dead-process").exists());
        assert_eq!(live.commit().await.unwrap(), 8);
        assert_eq!(files.read_range("files/a", 0, 8).await.unwrap(), b"buffered");
        // Listing: committed bodies with their sizes, under the prefix only.
        let listed = files.list("files").await.unwrap();
        assert_eq!(listed.iter().map(|b| (b.key.as_str(), b.bytes)).collect::<Vec<_>>(), [("files/a", 8)]);
        assert!(files.list("parts").await.unwrap().is_empty());
    }
}
