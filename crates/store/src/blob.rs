//! File bodies: the `FileStore` trait and its local-folder implementation.
//!
//! Writers stream into a temporary file and only appear under their key on `commit`, so a crash
//! or an aborted upload never leaves a half-written body behind a key.

use std::path::PathBuf;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use tokio::fs;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::Result;

/// A byte stream of a stored body.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

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
        let file = fs::File::create(&tmp).await?;
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
}

fn remove_if_present(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}
