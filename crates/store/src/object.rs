//! File bodies in an object store (S3-compatible, through the `object_store` crate).
//!
//! Writers stream a multipart upload in fixed parts with a bounded number in flight, so an
//! upload of any size holds at most a few parts in memory; the body appears under its key only
//! when `commit` completes the upload. Reads are streamed or ranged GETs, never a whole body.
//!
//! An incomplete multipart upload is invisible (no listing shows it) yet billed, and the one of
//! a killed process stays forever; `object_store` cannot list them. So every upload is journaled
//! in the bucket itself: before its first part, a writer PUTs a marker `uploads/<uuid>.json`
//! naming the key and the upload id, and removes it once the upload is completed or aborted.
//! `collect_abandoned` aborts the uploads whose markers have sat idle too long. A body of at
//! most one part is one plain PUT on commit, with no upload and no marker.
//!
//! One window stays unjournaled: a process killed between S3 creating an upload and the marker
//! PUT (one request) leaves an upload nothing names. The id exists only once S3 has answered,
//! so no order of requests closes it; but no part is sent before the marker is stored, so such
//! an upload holds no bytes (S3 bills parts, not uploads). A bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) clears those too. The other windows leave a marker whose
//! upload is already gone (killed after completing or aborting it, before removing the
//! marker): `collect_abandoned` takes S3's 404 for that upload as done and removes the marker.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectMeta, ObjectStore, PutPayload, PutPayloadMut};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;
use tokio::task::{JoinError, JoinSet};
use tracing::Instrument;

use crate::blob::{unix_ms, BlobMeta, BlobWriter, ByteStream, FileStore};
use crate::{Result, StoreError};

/// Size of one uploaded part. S3 refuses parts under 5 MiB (but the last); a body of at most
/// this size is sent as one plain PUT on commit.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts uploading at once per writer: with the part being filled, a writer holds at most
/// `(PARTS_IN_FLIGHT + 1) * PART_SIZE` bytes.
const PARTS_IN_FLIGHT: usize = 2;

/// How long an upload's marker may sit untouched before `collect_abandoned` takes the upload
/// for one of a killed process (unless told otherwise).
pub const OBJECT_ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A live writer PUTs its marker again when it sends a part this long after the last PUT, so
/// that a marker's age is how long its writer has been idle, not how long the upload has run.
/// (Hence an `older_than` below this, plus the longest pause between two parts, could take a
/// live writer.)
const MARKER_REFRESH: Duration = Duration::from_secs(60);

/// The folder of the upload markers; no body key starts with it (`model::file_key`, `part_key`).
const MARKERS: &str = "uploads";

/// The key `check_writable` writes and removes.
const PROBE_KEY: &str = "ready-check";

/// Bodies as objects of a bucket, keys as object paths under an optional prefix of it.
pub struct ObjectFileStore {
    objects: Arc<dyn ObjectStore>,
    /// The same bucket, for driving multipart uploads (whose ids the markers record).
    uploads: Arc<dyn MultipartStore>,
    /// The folder of the bucket every key lives under (empty: the bucket's root).
    prefix: Path,
}

impl ObjectFileStore {
    /// Bodies in `store`, under `prefix` (`team-a` puts `files/x` at `team-a/files/x`). The
    /// prefix is applied here rather than by a `PrefixStore`, which offers no multipart uploads.
    pub fn new<S: ObjectStore + MultipartStore>(store: Arc<S>, prefix: Option<&str>) -> Self {
        ObjectFileStore { objects: store.clone(), uploads: store, prefix: Path::from(prefix.unwrap_or_default()) }
    }

    /// The object path of a key.
    fn path(&self, key: &str) -> Path {
        self.prefix.parts().chain(Path::from(key).parts()).collect()
    }

    /// The key of an object path (under the prefix, as every listed path is).
    fn key(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(rest) => Path::from_iter(rest).to_string(),
            None => path.to_string(),
        }
    }

    /// Every object under a key prefix (path segments: `parts/b1` excludes `parts/b10`).
    async fn objects_under(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let listed = self.objects.list(Some(&self.path(prefix.trim_end_matches('/'))));
        Ok(listed.try_collect().await?)
    }
}

/// What a marker records of its upload.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// The key being written (without the store's prefix).
    key: String,
    upload_id: MultipartId,
    started_ms: i64,
}

/// A body being written: buffered up to one part, then a journaled multipart upload.
struct ObjectWriter {
    objects: Arc<dyn ObjectStore>,
    uploads: Arc<dyn MultipartStore>,
    key: String,
    path: Path,
    /// The marker's path, reserved before the upload starts.
    marker: Path,
    /// The part being filled: the whole body while it fits in one part.
    buffer: PutPayloadMut,
    /// Begun with the second part's first byte; `None` again once completed.
    upload: Option<Upload>,
    written: u64,
}

/// A multipart upload in progress and its marker.
struct Upload {
    id: MultipartId,
    /// The marker's body, and when it was last PUT (`None`: not yet).
    marker_body: Bytes,
    marked: Option<Instant>,
    /// By part number; `None` while uploading.
    parts: Vec<Option<PartId>>,
    in_flight: JoinSet<object_store::Result<(usize, PartId)>>,
}

impl Upload {
    /// Records a finished part upload.
    fn settle(&mut self, joined: Option<Result<object_store::Result<(usize, PartId)>, JoinError>>) -> Result<()> {
        if let Some(joined) = joined {
            let (idx, part) = joined.map_err(std::io::Error::other)??;
            self.parts[idx] = Some(part);
        }
        Ok(())
    }
}

impl ObjectWriter {
    /// Sends the full buffer as the next part, beginning the upload (and its marker) first if
    /// this is its first part. Waits while `PARTS_IN_FLIGHT` parts are uploading.
    async fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            let id = self.uploads.create_multipart(&self.path).await?;
            // Kept before the marker is PUT, so that a writer dropped (or a `write` cancelled)
            // from here on aborts the upload.
            let marker =
                Marker { key: self.key.clone(), upload_id: id.clone(), started_ms: unix_ms(SystemTime::now()) };
            let marker_body = serde_json::to_vec(&marker).map_err(std::io::Error::other)?.into();
            self.upload = Some(Upload { id, marker_body, marked: None, parts: Vec::new(), in_flight: JoinSet::new() });
        }
        let upload = self.upload.as_mut().expect("begun above");
        while upload.in_flight.len() >= PARTS_IN_FLIGHT {
            let joined = upload.in_flight.join_next().await;
            upload.settle(joined)?;
        }
        // The first PUT comes before any part is sent: no part is ever stored unjournaled.
        if upload.marked.is_none_or(|at| at.elapsed() >= MARKER_REFRESH) {
            self.objects.put(&self.marker, upload.marker_body.clone().into()).await?;
            upload.marked = Some(Instant::now());
        }
        let (uploads, path, id, idx) = (self.uploads.clone(), self.path.clone(), upload.id.clone(), upload.parts.len());
        let data = std::mem::take(&mut self.buffer).freeze();
        upload.parts.push(None);
        upload.in_flight.spawn(
            async move { uploads.put_part(&path, &id, idx, data).await.map(|part| (idx, part)) }.in_current_span(),
        );
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for ObjectWriter {
    async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            // A full part goes only once more bytes follow it, so that a body of exactly one
            // part is still a plain PUT.
            if self.buffer.content_length() == PART_SIZE {
                self.send_part().await?;
            }
            let n = data.len().min(PART_SIZE - self.buffer.content_length());
            self.buffer.extend_from_slice(&data[..n]);
            self.written += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64> {
        if self.upload.is_none() {
            let body = std::mem::take(&mut self.buffer).freeze();
            self.objects.put(&self.path, body).await?;
            return Ok(self.written);
        }
        if !self.buffer.is_empty() {
            self.send_part().await?;
        }
        let upload = self.upload.as_mut().expect("begun");
        while !upload.in_flight.is_empty() {
            let joined = upload.in_flight.join_next().await;
            upload.settle(joined)?;
        }
        let parts = upload.parts.iter().map(|p| p.clone().expect("every part settled")).collect();
        self.uploads.complete_multipart(&self.path, &upload.id, parts).await?;
        // Completed: nothing is left to abort. A marker that outlives this (a failed delete, a
        // crash) names an upload that is gone, which `collect_abandoned` takes as done.
        self.upload = None;
        if let Err(e) = delete_if_present(&*self.objects, &self.marker).await {
            tracing::warn!(error = %e, marker = %self.marker, "could not remove the marker of a completed upload");
        }
        Ok(self.written)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // Not committed: abort the upload so that the parts already sent are removed, then its
        // marker. This runs in a task of its own (aborting is a request); a process that exits
        // before it runs leaves the marker, and `collect_abandoned` aborts the upload later.
        let (Some(mut upload), Ok(runtime)) = (self.upload.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let (objects, uploads, path, marker) =
            (self.objects.clone(), self.uploads.clone(), self.path.clone(), self.marker.clone());
        let span = tracing::info_span!("abort_upload", key = %self.key);
        runtime.spawn(
            async move {
                // Parts still uploading would otherwise land after the abort, kept and billed.
                upload.in_flight.shutdown().await;
                if let Err(e) = abort_journaled(&*objects, &*uploads, &path, &upload.id, &marker).await {
                    tracing::warn!(error = %e, "could not abort an uncommitted upload; collect_abandoned will");
                }
            }
            .instrument(span),
        );
    }
}

/// Aborts an upload, then removes its marker: the marker goes only once the upload is gone, so
/// a failure here leaves it for a later `collect_abandoned`. An upload already gone (completed,
/// or aborted by another), which S3 answers with 404, is not an error. (s3s-fs, the test
/// server, answers 403 instead: that stays an error, as S3's 403 for a missing permission must.)
async fn abort_journaled(
    objects: &dyn ObjectStore,
    uploads: &dyn MultipartStore,
    path: &Path,
    id: &MultipartId,
    marker: &Path,
) -> Result<()> {
    match uploads.abort_multipart(path, id).await {
        Err(object_store::Error::NotFound { .. }) | Ok(()) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(delete_if_present(objects, marker).await?)
}

async fn delete_if_present(objects: &dyn ObjectStore, path: &Path) -> object_store::Result<()> {
    match objects.delete(path).await {
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        other => other,
    }
}

#[async_trait]
impl FileStore for ObjectFileStore {
    async fn writer(&self, key: &str) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(ObjectWriter {
            objects: self.objects.clone(),
            uploads: self.uploads.clone(),
            key: key.to_string(),
            path: self.path(key),
            marker: self.path(&format!("{MARKERS}/{}.json", uuid::Uuid::new_v4().simple())),
            buffer: PutPayloadMut::new(),
            upload: None,
            written: 0,
        }))
    }

    async fn reader(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        Ok(Box::new(tokio_util::io::StreamReader::new(self.stream(key).await?)))
    }

    async fn stream(&self, key: &str) -> Result<ByteStream> {
        let body = self.objects.get(&self.path(key)).await?;
        Ok(Box::pin(body.into_stream().map_err(std::io::Error::from)))
    }

    async fn read_range(&self, key: &str, start: u64, end: u64) -> Result<Vec<u8>> {
        if start == end {
            return Ok(Vec::new());
        }
        let bytes = self.objects.get_range(&self.path(key), start..end).await?;
        if bytes.len() as u64 != end - start {
            return Err(StoreError::Corrupt(format!(
                "{key}: asked for bytes {start}..{end}, got {} bytes",
                bytes.len()
            )));
        }
        Ok(bytes.into())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        Ok(delete_if_present(&*self.objects, &self.path(key)).await?)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let prefix = self.path(prefix.trim_end_matches('/'));
        let listed = self.objects.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
        let mut deleted = self.objects.delete_stream(listed);
        while let Some(result) = deleted.next().await {
            match result {
                Err(object_store::Error::NotFound { .. }) | Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn check_writable(&self) -> Result<()> {
        let probe = self.path(PROBE_KEY);
        self.objects.put(&probe, PutPayload::from(Bytes::from_static(b"ok"))).await?;
        self.objects.delete(&probe).await?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>> {
        // Markers are not bodies, even to a listing of the whole store.
        let markers = self.path(MARKERS);
        Ok(self
            .objects_under(prefix)
            .await?
            .into_iter()
            .filter(|meta| !meta.location.prefix_matches(&markers))
            .map(|meta| BlobMeta {
                key: self.key(&meta.location),
                bytes: meta.size,
                modified_ms: unix_ms(meta.last_modified.into()),
            })
            .collect())
    }

    async fn collect_abandoned(&self, older_than: Option<Duration>, limit: usize) -> Result<usize> {
        // A marker's age is the store's clock (its last PUT), compared with ours: a skew between
        // the two shifts the age by as much, which matters little against a day.
        let cutoff = unix_ms(SystemTime::now()) - older_than.unwrap_or(OBJECT_ABANDONED_AFTER).as_millis() as i64;
        let (mut removed, mut first_failure) = (0, None);
        for meta in self.objects_under(MARKERS).await? {
            if removed >= limit {
                break;
            }
            if unix_ms(meta.last_modified.into()) > cutoff {
                continue;
            }
            // One marker that fails (its upload refuses the abort) must not hold up the ones
            // listed after it, pass after pass: it stays for the next pass, and the first
            // failure is this pass's answer.
            match self.collect_marker(&meta.location).await {
                Ok(Collected::Removed) => removed += 1,
                Ok(Collected::Gone) => {}
                Err(e) => {
                    tracing::warn!(error = %e, marker = %meta.location, "could not abort an abandoned upload");
                    first_failure.get_or_insert(e);
                }
            }
        }
        first_failure.map_or(Ok(removed), Err)
    }
}

/// What became of one marker `collect_abandoned` took up.
enum Collected {
    /// Its upload aborted (or found gone), then the marker removed.
    Removed,
    /// Removed since the listing, by its writer or another collector.
    Gone,
}

impl ObjectFileStore {
    /// Aborts the upload a marker names, then removes the marker.
    async fn collect_marker(&self, marker: &Path) -> Result<Collected> {
        let body = match self.objects.get(marker).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(Collected::Gone),
            other => other?.bytes().await?,
        };
        match serde_json::from_slice::<Marker>(&body) {
            Ok(upload) => {
                abort_journaled(&*self.objects, &*self.uploads, &self.path(&upload.key), &upload.upload_id, marker)
                    .await?;
                tracing::info!(key = %upload.key, upload_id = %upload.upload_id, started_ms = upload.started_ms, "aborted an abandoned upload");
            }
            Err(e) => {
                // Names no upload it could abort: useless, and it would come back every pass.
                tracing::warn!(error = %e, %marker, "removing an unreadable upload marker");
                delete_if_present(&*self.objects, marker).await?;
            }
        }
        Ok(Collected::Removed)
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use tokio::io::AsyncReadExt;

    use super::*;

    fn store() -> (Arc<InMemory>, ObjectFileStore) {
        let memory = Arc::new(InMemory::new());
        (memory.clone(), ObjectFileStore::new(memory, None))
    }

    async fn keys(memory: &InMemory) -> Vec<String> {
        let mut keys: Vec<String> = memory.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        keys.sort();
        keys
    }

    /// The markers in the bucket, read.
    async fn markers(memory: &InMemory) -> Vec<Marker> {
        let mut markers = Vec::new();
        for key in keys(memory).await.into_iter().filter(|k| k.contains("uploads/")) {
            let body = memory.get(&Path::from(key)).await.unwrap().bytes().await.unwrap();
            markers.push(serde_json::from_slice(&body).unwrap());
        }
        markers
    }

    /// Whether an upload still exists: completing it fails once it is aborted. (It would
    /// complete one still there, so this only asks about uploads expected to be gone.)
    async fn upload_is_gone(memory: &InMemory, key: &str, id: &MultipartId) -> bool {
        memory.complete_multipart(&Path::from(key), id, Vec::new()).await.is_err()
    }

    /// Lets spawned tasks (a dropped writer's abort) run until `check` holds.
    async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) {
        for _ in 0..1000 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("never happened");
    }

    /// A body of `len` bytes that differs at every position modulo 251.
    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// A writer of `key` that has sent more than one part and is never committed nor dropped,
    /// as a process killed mid-upload leaves it.
    async fn abandon(files: &ObjectFileStore, key: &str) {
        let mut w = files.writer(key).await.unwrap();
        w.write(&body(2 * PART_SIZE + 1)).await.unwrap();
        std::mem::forget(w);
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
        let (memory, files) = store();
        let data = body(2 * PART_SIZE + 12345);
        let mut w = files.writer("files/big").await.unwrap();
        for piece in data.chunks(100_000) {
            w.write(piece).await.unwrap();
        }
        assert_eq!(markers(&memory).await.len(), 1, "an upload in parts is journaled");
        assert_eq!(w.commit().await.unwrap(), data.len() as u64);
        assert_eq!(keys(&memory).await, ["files/big"], "its marker goes with the commit");

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
    async fn a_body_of_one_part_is_one_put() {
        let (memory, files) = store();
        let mut w = files.writer("files/one").await.unwrap();
        w.write(&body(PART_SIZE)).await.unwrap();
        assert!(keys(&memory).await.is_empty(), "no upload, no marker");
        assert_eq!(w.commit().await.unwrap(), PART_SIZE as u64);
        assert_eq!(keys(&memory).await, ["files/one"]);
    }

    #[tokio::test]
    async fn a_dropped_writer_leaves_nothing() {
        let (memory, files) = store();
        let mut w = files.writer("files/gone").await.unwrap();
        w.write(&body(PART_SIZE + 1)).await.unwrap();
        let [marker] = &markers(&memory).await[..] else { panic!("one marker") };
        assert_eq!(marker.key, "files/gone");
        drop(w);
        let mut small = files.writer("files/small").await.unwrap();
        small.write(b"x").await.unwrap();
        drop(small);
        eventually(|| async { keys(&memory).await.is_empty() }).await;
        assert!(upload_is_gone(&memory, "files/gone", &marker.upload_id).await, "the upload is aborted");
    }

    #[tokio::test]
    async fn a_forgotten_upload_is_aborted_by_collect_abandoned() {
        let (memory, files) = store();
        abandon(&files, "files/killed").await;
        let [marker] = &markers(&memory).await[..] else { panic!("one marker") };
        assert_eq!(marker.key, "files/killed");
        // Under a day old: the default leaves it.
        assert_eq!(files.collect_abandoned(None, 10).await.unwrap(), 0);
        assert_eq!(markers(&memory).await.len(), 1);

        assert_eq!(files.collect_abandoned(Some(Duration::ZERO), 10).await.unwrap(), 1);
        assert!(keys(&memory).await.is_empty(), "the marker is removed");
        assert!(upload_is_gone(&memory, "files/killed", &marker.upload_id).await, "the upload is aborted");
        assert_eq!(files.collect_abandoned(Some(Duration::ZERO), 10).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn collect_abandoned_removes_at_most_its_limit() {
        let (memory, files) = store();
        for key in ["files/a", "files/b", "files/c"] {
            abandon(&files, key).await;
        }
        assert_eq!(files.collect_abandoned(Some(Duration::ZERO), 2).await.unwrap(), 2);
        assert_eq!(markers(&memory).await.len(), 1);
        assert_eq!(files.collect_abandoned(Some(Duration::ZERO), 2).await.unwrap(), 1);
        assert!(keys(&memory).await.is_empty());
    }

    #[tokio::test]
    async fn a_failing_marker_holds_up_no_other() {
        let (memory, files) = store();
        abandon(&files, "files/killed").await;
        let killed = markers(&memory).await.pop().unwrap();
        // Listed first: one whose abort fails (InMemory's unknown upload, as s3s-fs answers 403
        // where S3 answers 404 for an upload that is gone), and one that names nothing.
        let failing = Marker { key: "files/x".into(), upload_id: "999".into(), started_ms: 0 };
        memory.put(&Path::from("uploads/0000.json"), serde_json::to_vec(&failing).unwrap().into()).await.unwrap();
        memory.put(&Path::from("uploads/0001.json"), PutPayload::from_static(b"not a marker")).await.unwrap();

        let e = files.collect_abandoned(Some(Duration::ZERO), 10).await.unwrap_err();
        assert!(e.to_string().contains("999"), "{e}");
        assert_eq!(keys(&memory).await, ["uploads/0000.json"], "the failing marker stays for the next pass");
        assert!(
            upload_is_gone(&memory, "files/killed", &killed.upload_id).await,
            "the upload listed after it is aborted"
        );
    }

    #[tokio::test]
    async fn a_live_writer_is_not_collected() {
        let (memory, files) = store();
        let data = body(2 * PART_SIZE + 7);
        let mut w = files.writer("files/live").await.unwrap();
        w.write(&data[..PART_SIZE + 1]).await.unwrap();
        assert_eq!(files.collect_abandoned(Some(Duration::from_secs(3600)), 10).await.unwrap(), 0);
        assert_eq!(markers(&memory).await.len(), 1);
        w.write(&data[PART_SIZE + 1..]).await.unwrap();
        assert_eq!(w.commit().await.unwrap(), data.len() as u64);
        assert_eq!(keys(&memory).await, ["files/live"]);
        assert!(files.read_range("files/live", 0, data.len() as u64).await.unwrap() == data);
    }

    #[tokio::test]
    async fn markers_never_show_up_in_list() {
        let (memory, files) = store();
        for key in ["files/a", "parts/b1/x"] {
            let mut w = files.writer(key).await.unwrap();
            w.write(b"x").await.unwrap();
            w.commit().await.unwrap();
        }
        abandon(&files, "files/killed").await;
        assert_eq!(keys(&memory).await.len(), 3, "two bodies and a marker");
        let mut listed: Vec<String> = files.list("").await.unwrap().into_iter().map(|m| m.key).collect();
        listed.sort();
        assert_eq!(listed, ["files/a", "parts/b1/x"]);
        assert!(files.list(MARKERS).await.unwrap().is_empty());
        assert_eq!(files.list("files").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn keys_and_markers_live_under_the_prefix() {
        let memory = Arc::new(InMemory::new());
        let files = ObjectFileStore::new(memory.clone(), Some("team-a"));
        let mut w = files.writer("files/a").await.unwrap();
        w.write(b"body").await.unwrap();
        w.commit().await.unwrap();
        abandon(&files, "files/killed").await;
        let stored = keys(&memory).await;
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0], "team-a/files/a");
        assert!(stored[1].starts_with("team-a/uploads/"), "{stored:?}");
        let listed = files.list("files").await.unwrap();
        assert_eq!(listed.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["files/a"]);
        assert_eq!(files.read_range("files/a", 0, 4).await.unwrap(), b"body");
        assert_eq!(files.collect_abandoned(Some(Duration::ZERO), 10).await.unwrap(), 1);
        files.delete_prefix("files").await.unwrap();
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
