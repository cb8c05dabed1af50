//! File bodies in an object store (S3-compatible, through the `object_store` crate).
//!
//! Writers stream a multipart upload in fixed parts with a bounded number in flight, so an
//! upload of any size holds at most a few parts in memory; the body appears under its key only
//! when `commit` completes the upload. Reads are streamed or ranged GETs, never a whole body.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::blob::{BlobWriter, ByteStream, FileStore};
use crate::{Result, StoreError};

/// Size of one uploaded part. S3 refuses parts under 5 MiB (but the last); a body smaller than
/// this is sent as one plain PUT on commit.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts uploading at once per writer: with the part being filled, a writer holds at most
/// `(PARTS_IN_FLIGHT + 1) * PART_SIZE` bytes.
const PARTS_IN_FLIGHT: usize = 2;

/// The key `check_writable` writes and removes.
const PROBE_KEY: &str = "ready-check";

/// Bodies as objects of an `ObjectStore`, keys as object paths (a bucket prefix, if any, is
/// the store's own: see `object_store::prefix::PrefixStore`).
pub struct ObjectFileStore {
    store: Arc<dyn ObjectStore>,
}

impl ObjectFileStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectFileStore { store }
    }
}

/// A multipart upload in progress; dropped without `commit`, it is aborted.
struct ObjectWriter {
    upload: Option<BufWriter>,
    written: u64,
}

#[async_trait]
impl BlobWriter for ObjectWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        let upload = self.upload.as_mut().expect("writer used after commit");
        upload.write_all(data).await?;
        self.written += data.len() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64> {
        let mut upload = self.upload.take().expect("writer committed twice");
        // Completes the multipart upload (or PUTs a body smaller than one part).
        upload.shutdown().await?;
        Ok(self.written)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // Not committed: abort the upload so that the parts already sent are removed. This
        // runs in a task of its own (aborting is a request); a process that exits before it
        // runs leaves an incomplete upload, which is never visible under the key.
        if let (Some(mut upload), Ok(runtime)) = (self.upload.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "could not abort an uncommitted upload");
                }
            });
        }
    }
}

#[async_trait]
impl FileStore for ObjectFileStore {
    async fn writer(&self, key: &str) -> Result<Box<dyn BlobWriter>> {
        let upload = BufWriter::with_capacity(self.store.clone(), Path::from(key), PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(Box::new(ObjectWriter { upload: Some(upload), written: 0 }))
    }

    async fn reader(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(Box::new(tokio_util::io::StreamReader::new(self.stream(key).await?)))
    }

    async fn stream(&self, key: &str) -> Result<ByteStream> {
        let body = self.store.get(&Path::from(key)).await?;
        Ok(Box::pin(body.into_stream().map_err(std::io::Error::from)))
    }

    async fn read_range(&self, key: &str, start: u64, end: u64) -> Result<Vec<u8>> {
        if start == end {
            return Ok(Vec::new());
        }
        let bytes = self.store.get_range(&Path::from(key), start..end).await?;
        if bytes.len() as u64 != end - start {
            return Err(StoreError::Corrupt(format!(
                "{key}: asked for bytes {start}..{end}, got {} bytes",
                bytes.len()
            )));
        }
        Ok(bytes.into())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => Ok(other?),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let prefix = Path::from(prefix.trim_end_matches('/'));
        let listed = self.store.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
        let mut deleted = self.store.delete_stream(listed);
        while let Some(result) = deleted.next().await {
            match result {
                Err(object_store::Error::NotFound { .. }) | Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn check_writable(&self) -> Result<()> {
        let probe = Path::from(PROBE_KEY);
        self.store.put(&probe, PutPayload::from(Bytes::from_static(b"ok"))).await?;
        self.store.delete(&probe).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use tokio::io::AsyncReadExt;

    use super::*;

    fn store() -> (Arc<InMemory>, ObjectFileStore) {
        let memory = Arc::new(InMemory::new());
        (memory.clone(), ObjectFileStore::new(memory))
    }

    async fn keys(memory: &InMemory) -> Vec<String> {
        let mut keys: Vec<String> = memory.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        keys.sort();
        keys
    }

    /// A body of `len` bytes that differs at every position modulo 251.
    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_body_appears_only_on_commit() {
        let (memory, files) = store();
        let mut w = files.writer("files/a").await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        assert!(keys(&memory).await.is_empty(), "nothing visible before commit");
        assert_eq!(w.commit().await.unwrap(), 11);
        assert_eq!(keys(&memory).await, ["files/a"]);
        assert_eq!(files.read_range("files/a", 6, 11).await.unwrap(), b"world");
        assert_eq!(files.read_range("files/a", 3, 3).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn bodies_larger_than_a_part_round_trip() {
        let (_, files) = store();
        let data = body(2 * PART_SIZE + 12345);
        let mut w = files.writer("files/big").await.unwrap();
        for piece in data.chunks(100_000) {
            w.write(piece).await.unwrap();
        }
        assert_eq!(w.commit().await.unwrap(), data.len() as u64);

        let streamed: Vec<u8> = files
            .stream("files/big")
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut acc, b| async move {
                acc.extend_from_slice(&b);
                Ok(acc)
            })
            .await
            .unwrap();
        assert!(streamed == data, "streamed body differs");
        let mut read = Vec::new();
        files.reader("files/big").await.unwrap().read_to_end(&mut read).await.unwrap();
        assert!(read == data, "read body differs");
        let (start, end) = (PART_SIZE as u64 - 10, PART_SIZE as u64 + 10);
        assert_eq!(files.read_range("files/big", start, end).await.unwrap(), data[start as usize..end as usize]);
    }

    #[tokio::test]
    async fn a_dropped_writer_leaves_nothing() {
        let (memory, files) = store();
        let mut w = files.writer("files/gone").await.unwrap();
        w.write(&body(PART_SIZE + 1)).await.unwrap();
        drop(w);
        let mut small = files.writer("files/small").await.unwrap();
        small.write(b"x").await.unwrap();
        drop(small);
        assert!(keys(&memory).await.is_empty());
    }

    #[tokio::test]
    async fn missing_keys_read_as_not_found_and_delete_quietly() {
        let (_, files) = store();
        for e in
            [files.read_range("files/none", 0, 1).await.unwrap_err(), files.stream("files/none").await.err().unwrap()]
        {
            assert!(matches!(&e, StoreError::Io(io) if io.kind() == std::io::ErrorKind::NotFound), "{e:?}");
        }
        files.delete("files/none").await.unwrap();
        files.delete_prefix("parts/none").await.unwrap();
    }

    #[tokio::test]
    async fn delete_prefix_removes_only_that_prefix() {
        let (memory, files) = store();
        for key in ["parts/b1/00000000-1.out.jsonl", "parts/b1/00000000-1.err.jsonl", "parts/b10/x", "files/f"] {
            let mut w = files.writer(key).await.unwrap();
            w.write(b"x").await.unwrap();
            w.commit().await.unwrap();
        }
        files.delete_prefix("parts/b1").await.unwrap();
        assert_eq!(keys(&memory).await, ["files/f", "parts/b10/x"]);
        files.delete("files/f").await.unwrap();
        assert_eq!(keys(&memory).await, ["parts/b10/x"]);
    }

    #[tokio::test]
    async fn the_readiness_probe_leaves_nothing() {
        let (memory, files) = store();
        files.check_writable().await.unwrap();
        assert!(keys(&memory).await.is_empty());
    }
}
