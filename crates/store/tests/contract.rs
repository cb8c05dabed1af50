//! The Store contract: what every backend must do, checked over `&dyn Store` on a real SQLite
//! file and on a real PostgreSQL (`VLLM_BATCH_TEST_PG`, which tests/run.sh sets; under `CI=true`
//! the PostgreSQL run is required, never skipped).
//!
//! Fencing, lease expiry on the database's clock (a handle whose process clock is shifted ±5
//! minutes neither steals a live lease nor keeps an expired one), exactly-one finalization,
//! cancel racing validation, fair rotation across batches, and checkpoints that survive a
//! take-over.

use std::sync::Arc;
use std::time::Duration;

use vllm_batch_core::time::{set_offset_ms, unix_now};
use vllm_batch_core::{BatchId, BatchStatus, FileId, FileObject, Usage};
use vllm_batch_store::*;

const LEASE_MS: i64 = 30_000;

/// A fresh store of each backend available here.
async fn backends() -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        connect(&format!("sqlite://{}/contract.db", dir.path().display()), &PoolConfig::default()).await.unwrap();
    sqlite.migrate().await.unwrap();
    let mut stores = vec![("sqlite", sqlite, Some(dir))];
    if let Some(url) = fresh_pg_database().await {
        let pg = connect(&url, &PoolConfig::default()).await.unwrap();
        pg.migrate().await.unwrap();
        stores.push(("postgres", pg, None));
    }
    stores
}

/// A new database on the test PostgreSQL, or `None` when there is none (outside CI).
async fn fresh_pg_database() -> Option<String> {
    let base = match std::env::var("VLLM_BATCH_TEST_PG") {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_string(),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("VLLM_BATCH_TEST_PG is not set: run `export VLLM_BATCH_TEST_PG=$(tests/pg/start.sh)`")
        }
        _ => {
            eprintln!("PostgreSQL part skipped: VLLM_BATCH_TEST_PG is not set (tests/run.sh sets it)");
            return None;
        }
    };
    use sqlx::Connection;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("vbc_{}_{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres")).await.unwrap();
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    Some(format!("{base}/{name}"))
}

/// A new batch, validating, of `file`.
/// A chat batch over `file`, as `POST /v1/batches` makes it.
fn batch_on(file: FileId) -> NewBatch {
    NewBatch {
        id: BatchId::generate(),
        endpoint: "/v1/chat/completions".parse().unwrap(),
        input_file_id: file,
        completion_window: "24h".parse().unwrap(),
        metadata: None,
        output_expires_after: None,
        created_at: unix_now(),
        owner: None,
        priority: None,
    }
}

async fn new_batch(store: &dyn Store, file: FileId) -> BatchId {
    let new = batch_on(file);
    store.insert_batch(&new).await.unwrap().expect("the input file exists");
    new.id
}

/// A file row of purpose `batch`, expiring at `expires_at` (Unix seconds).
async fn input_file(store: &dyn Store, expires_at: Option<i64>) -> FileId {
    let f = FileObject {
        id: FileId::generate().to_string(),
        object: "file".into(),
        bytes: 100,
        created_at: unix_now(),
        expires_at,
        filename: "in.jsonl".into(),
        purpose: "batch".into(),
        status: "processed".into(),
        status_details: None,
    };
    store.insert_file(&f, None).await.unwrap();
    f.id.parse().unwrap()
}

/// A batch in progress with `chunks` chunks of 10 lines each.
async fn running_batch(store: &dyn Store, chunks: i64) -> BatchId {
    let file = input_file(store, None).await;
    let id = new_batch(store, file).await;
    let job = loop {
        // Other batches of the same store may be validating: take ours.
        let job = store.claim_validation("validator", LEASE_MS).await.unwrap().expect("a batch to validate");
        if job.batch_id == id {
            break job;
        }
    };
    let specs = (0..chunks)
        .map(|i| ChunkSpec {
            idx: i,
            first_line: i * 10 + 1,
            line_count: 10,
            byte_start: i * 10,
            byte_end: i * 10 + 10,
        })
        .collect();
    let outcome = ValidationOutcome::Valid { model: "m".into(), total: 10 * chunks, chunks: specs };
    assert_eq!(store.finish_validation(&job, &outcome).await.unwrap(), Fenced::Applied);
    id
}

fn checkpoint(lines: &[usize], failed: i64) -> Checkpoint {
    let mut done = LineSet::default();
    for &l in lines {
        done.insert(l);
    }
    Checkpoint {
        parts: vec![format!("parts/x/{}.out.jsonl", lines.len())],
        done,
        completed: lines.len() as i64 - failed,
        failed,
        usage: Usage { input_tokens: 3 * lines.len() as i64, total_tokens: 3 * lines.len() as i64, ..Usage::default() },
    }
}

fn beat(lease: &ChunkLease, checkpoint: Option<Checkpoint>) -> ChunkBeat {
    ChunkBeat { batch_id: lease.batch_id.clone(), idx: lease.chunk.idx, fence: lease.fence, checkpoint }
}

async fn counts(store: &dyn Store, id: &BatchId) -> (i64, i64) {
    let b = store.get_batch(id, None).await.unwrap().unwrap();
    (b.request_counts.completed, b.request_counts.failed)
}

/// Only one check shifts the process clock at a time (it is process-wide).
static CLOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stale_fence_can_neither_heartbeat_nor_complete_nor_write_counts(store: &dyn Store) {
    let batch = running_batch(store, 1).await;
    let old = store.claim_chunk("a", 1).await.unwrap().expect("a chunk");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The lease (1 ms) has expired on the database's clock: another worker takes the chunk.
    let new = store.claim_chunk("b", LEASE_MS).await.unwrap().expect("the expired chunk");
    assert_eq!((new.batch_id.clone(), new.chunk.idx), (batch.clone(), old.chunk.idx));
    assert!(new.fence > old.fence);
    assert_eq!(
        store.heartbeat(&[beat(&old, Some(checkpoint(&[0, 1], 0)))], LEASE_MS).await.unwrap(),
        [BeatAnswer::Lost]
    );
    assert_eq!(counts(store, &batch).await, (0, 0), "a stale beat wrote counts");
    assert_eq!(store.complete_chunk(&old, &checkpoint(&[0, 1, 2], 0)).await.unwrap(), Fenced::Lost);
    assert_eq!(store.release_chunk(&old).await.unwrap(), Fenced::Lost);
    assert_eq!(counts(store, &batch).await, (0, 0), "a stale completion wrote counts");
    // The holder's writes land.
    assert_eq!(
        store.heartbeat(&[beat(&new, Some(checkpoint(&[0, 1], 1)))], LEASE_MS).await.unwrap(),
        [BeatAnswer::Held]
    );
    assert_eq!(counts(store, &batch).await, (1, 1));
    let all: Vec<usize> = (0..10).collect();
    assert_eq!(store.complete_chunk(&new, &checkpoint(&all, 1)).await.unwrap(), Fenced::Applied);
    assert_eq!(counts(store, &batch).await, (9, 1));
    let b = store.get_batch(&batch, None).await.unwrap().unwrap();
    assert_eq!(b.usage.input_tokens, 30);
}

async fn release_bumps_the_fence_and_keeps_the_checkpoint_on(store: &dyn Store) {
    let batch = running_batch(store, 1).await;
    let lease = store.claim_chunk("a", LEASE_MS).await.unwrap().expect("a chunk");
    assert_eq!(
        store.heartbeat(&[beat(&lease, Some(checkpoint(&[3, 4, 5], 0)))], LEASE_MS).await.unwrap(),
        [BeatAnswer::Held]
    );
    assert_eq!(store.release_chunk(&lease).await.unwrap(), Fenced::Applied);
    assert_eq!(counts(store, &batch).await, (3, 0), "released progress stays visible");
    // The released holder can no longer write; the next holder gets a higher fence and the checkpoint.
    assert_eq!(store.heartbeat(&[beat(&lease, None)], LEASE_MS).await.unwrap(), [BeatAnswer::Lost]);
    let next = store.claim_chunk("b", LEASE_MS).await.unwrap().expect("the released chunk");
    assert!(next.fence > lease.fence);
    assert_eq!(next.checkpoint, checkpoint(&[3, 4, 5], 0));
    assert!(next.checkpoint.done.contains(4) && !next.checkpoint.done.contains(6));
    assert_eq!(store.complete_chunk(&lease, &checkpoint(&[0], 0)).await.unwrap(), Fenced::Lost);
}

/// A lease is live or expired by the database's clock, whatever the caller's clock says.
async fn leases_expire_on_the_database_clock_only_on(store: &dyn Store) {
    let _clock = CLOCK.lock().await;
    let batch = running_batch(store, 2).await;
    let live = store.claim_chunk("on-time", LEASE_MS).await.unwrap().expect("a chunk");
    let short = store.claim_chunk("on-time", 1_000).await.unwrap().expect("a second chunk");
    assert_eq!(short.batch_id, batch);
    // A worker whose clock runs 5 minutes ahead sees nothing expired yet.
    set_offset_ms(5 * 60 * 1000);
    let stolen = store.claim_chunk("ahead", LEASE_MS).await;
    set_offset_ms(0);
    let stolen = stolen.unwrap();
    assert!(stolen.is_none(), "a worker 5 minutes ahead took a live lease: {stolen:?}");
    // A worker whose clock runs 5 minutes behind still takes a lease that has expired.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    set_offset_ms(-5 * 60 * 1000);
    let taken = store.claim_chunk("behind", LEASE_MS).await;
    // …and its heartbeat extends by database time: the lease does not look expired to others.
    let beat_behind = match &taken {
        Ok(Some(l)) => Some(store.heartbeat(&[beat(l, None)], LEASE_MS).await),
        _ => None,
    };
    set_offset_ms(0);
    let taken = taken.unwrap().expect("the expired lease");
    assert_eq!((taken.batch_id.clone(), taken.chunk.idx), (short.batch_id.clone(), short.chunk.idx));
    assert_eq!(beat_behind.unwrap().unwrap(), [BeatAnswer::Held]);
    assert!(
        store.claim_chunk("on-time", LEASE_MS).await.unwrap().is_none(),
        "a lease extended by a late clock expired"
    );
    assert_eq!(store.heartbeat(&[beat(&live, None)], LEASE_MS).await.unwrap(), [BeatAnswer::Held]);
    // The database's clock is the one the store reports.
    let db = store.db_now_ms().await.unwrap();
    assert!((db - vllm_batch_core::time::unix_now_ms()).abs() < 60_000);
}

async fn two_finalization_claims_one_wins(store: &dyn Store) {
    let batch = running_batch(store, 2).await;
    for _ in 0..2 {
        let lease = store.claim_chunk("w", LEASE_MS).await.unwrap().unwrap();
        let all: Vec<usize> = (0..10).collect();
        assert_eq!(store.complete_chunk(&lease, &checkpoint(&all, 0)).await.unwrap(), Fenced::Applied);
    }
    let (a, b) = tokio::join!(store.claim_finalization("fa", LEASE_MS), store.claim_finalization("fb", LEASE_MS));
    let won: Vec<FinalizeJob> =
        [a.unwrap(), b.unwrap()].into_iter().flatten().filter(|j| j.job.batch_id == batch).collect();
    assert_eq!(won.len(), 1, "{won:?}");
    let job = &won[0];
    assert_eq!(job.mode, FinalizeMode::Complete);
    assert!(job.chunks.iter().all(|c| c.done && c.checkpoint.done.len() == 10));
    let out = FinalizeOutcome { output_bytes: Some(10), ..FinalizeOutcome::default() };
    assert_eq!(store.finish_finalization(job, &out).await.unwrap(), Fenced::Applied);
    assert_eq!(store.finish_finalization(job, &out).await.unwrap(), Fenced::Lost, "a batch ends once");
    let b = store.get_batch(&batch, None).await.unwrap().unwrap();
    assert_eq!(b.status, BatchStatus::Completed);
    assert_eq!((b.request_counts.completed, b.request_counts.failed), (20, 0));
}

async fn cancel_racing_validation(store: &dyn Store) {
    // Cancel while validating: cancelled at once, and the validator's result is dropped.
    let id = new_batch(store, input_file(store, None).await).await;
    let job = loop {
        let job = store.claim_validation("v", LEASE_MS).await.unwrap().expect("a batch to validate");
        if job.batch_id == id {
            break job;
        }
    };
    let (batch, changed) = store.request_cancel(&id, None).await.unwrap().unwrap();
    assert!(changed);
    assert_eq!(batch.status, BatchStatus::Cancelled);
    let outcome = ValidationOutcome::Valid {
        model: "m".into(),
        total: 1,
        chunks: vec![ChunkSpec { idx: 0, first_line: 1, line_count: 1, byte_start: 0, byte_end: 1 }],
    };
    assert_eq!(store.finish_validation(&job, &outcome).await.unwrap(), Fenced::Lost);
    assert_eq!(store.get_batch(&id, None).await.unwrap().unwrap().status, BatchStatus::Cancelled);
    // Cancel after validation: cancelling; the chunk's checkpoint survives into finalization.
    let batch = running_batch(store, 1).await;
    let lease = store.claim_chunk("w", LEASE_MS).await.unwrap().unwrap();
    assert_eq!(
        store.heartbeat(&[beat(&lease, Some(checkpoint(&[0, 1], 0)))], LEASE_MS).await.unwrap(),
        [BeatAnswer::Held]
    );
    let (b, _) = store.request_cancel(&batch, None).await.unwrap().unwrap();
    assert_eq!(b.status, BatchStatus::Cancelling);
    assert_eq!(store.heartbeat(&[beat(&lease, None)], LEASE_MS).await.unwrap(), [BeatAnswer::Cancelling]);
    assert!(
        store.claim_finalization("f", LEASE_MS).await.unwrap().is_none_or(|j| j.job.batch_id != batch),
        "finalized while a live lease holds a chunk"
    );
    assert_eq!(store.release_chunk(&lease).await.unwrap(), Fenced::Applied);
    let job = store.claim_finalization("f", LEASE_MS).await.unwrap().expect("the cancelled batch");
    assert_eq!(job.mode, FinalizeMode::Cancel);
    assert!(!job.chunks[0].done);
    assert_eq!(job.chunks[0].checkpoint.done.len(), 2);
    assert_eq!(counts(store, &batch).await, (2, 0), "counts stay while finalizing");
    let out = FinalizeOutcome { extra_completed: 2, extra_failed: 8, ..FinalizeOutcome::default() };
    assert_eq!(store.finish_finalization(&job, &out).await.unwrap(), Fenced::Applied);
    let b = store.get_batch(&batch, None).await.unwrap().unwrap();
    assert_eq!((b.status, b.request_counts.completed, b.request_counts.failed), (BatchStatus::Cancelled, 2, 8));
}

async fn claims_rotate_across_batches_on(store: &dyn Store) {
    let a = running_batch(store, 3).await;
    let b = running_batch(store, 3).await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let lease = store.claim_chunk("w", LEASE_MS).await.unwrap().expect("a chunk");
        order.push(if lease.batch_id == a { 'a' } else { 'b' });
        assert!(lease.batch_id == a || lease.batch_id == b);
    }
    assert!(store.claim_chunk("w", LEASE_MS).await.unwrap().is_none());
    let alternating = order.windows(2).all(|w| w[0] != w[1]);
    assert!(alternating, "claims did not rotate: {order:?}");
}

/// Runs `check` on a fresh store of every backend.
async fn on_every_backend<F: std::future::Future<Output = ()>>(check: impl Fn(Arc<dyn Store>) -> F) {
    for (name, store, _dir) in backends().await {
        eprintln!("on {name}");
        check(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fence_can_neither_heartbeat_nor_complete_nor_write_counts() {
    on_every_backend(
        |s| async move { stale_fence_can_neither_heartbeat_nor_complete_nor_write_counts(s.as_ref()).await },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_bumps_the_fence_and_keeps_the_checkpoint() {
    on_every_backend(|s| async move { release_bumps_the_fence_and_keeps_the_checkpoint_on(s.as_ref()).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_on_the_database_clock_only() {
    on_every_backend(|s| async move { leases_expire_on_the_database_clock_only_on(s.as_ref()).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_finalization_claims_exactly_one_wins() {
    on_every_backend(|s| async move { two_finalization_claims_one_wins(s.as_ref()).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_races_validation_and_keeps_checkpoints() {
    on_every_backend(|s| async move { cancel_racing_validation(s.as_ref()).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_rotate_across_batches() {
    on_every_backend(|s| async move { claims_rotate_across_batches_on(s.as_ref()).await }).await;
}

async fn idempotency_keys_on(store: &dyn Store) {
    const DAY: i64 = 86_400_000;
    let begin = |owner: &'static str, key: &'static str, hash: &'static str, ttl: i64, stale: i64| async move {
        store.idempotency_begin(owner, key, hash, ttl, stale).await.unwrap()
    };
    assert_eq!(begin("alice", "k1", "h1", DAY, 60_000).await, Idempotent::Fresh);
    // The same request while the first runs, then once it has answered.
    assert_eq!(begin("alice", "k1", "h1", DAY, 60_000).await, Idempotent::InProgress);
    store.idempotency_finish("alice", "k1", r#"{"id":"batch_1"}"#).await.unwrap();
    assert_eq!(begin("alice", "k1", "h1", DAY, 60_000).await, Idempotent::Replay(r#"{"id":"batch_1"}"#.into()));
    // Another request under the key; the same key of another owner is another key.
    assert_eq!(begin("alice", "k1", "h2", DAY, 60_000).await, Idempotent::Mismatch);
    assert_eq!(begin("bob", "k1", "h2", DAY, 60_000).await, Idempotent::Fresh);
    // A failed request frees its key; an answered one keeps it.
    store.idempotency_abandon("bob", "k1").await.unwrap();
    assert_eq!(begin("bob", "k1", "h3", DAY, 60_000).await, Idempotent::Fresh);
    store.idempotency_abandon("alice", "k1").await.unwrap();
    assert_eq!(begin("alice", "k1", "h1", DAY, 60_000).await, Idempotent::Replay(r#"{"id":"batch_1"}"#.into()));
    // A reservation whose request died is taken over once stale; a key expires after its TTL.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(begin("bob", "k1", "h4", DAY, 10).await, Idempotent::Fresh);
    assert_eq!(begin("alice", "k1", "h5", 10, 60_000).await, Idempotent::Fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_reserve_replay_and_expire() {
    on_every_backend(|s| async move { idempotency_keys_on(s.as_ref()).await }).await;
}

async fn expiry_and_the_collectors_lease_on(store: &dyn Store) {
    let file = |expires_at: Option<i64>| FileObject {
        id: FileId::generate().to_string(),
        object: "file".into(),
        bytes: 1,
        created_at: unix_now() - 100,
        expires_at,
        filename: "f.jsonl".into(),
        purpose: "batch".into(),
        status: "processed".into(),
        status_details: None,
    };
    // Expiry is decided on the database's clock: a process clock 5 minutes behind changes nothing.
    let _clock = CLOCK.lock().await;
    let (gone, kept, forever) = (file(Some(unix_now() - 5)), file(Some(unix_now() + 3600)), file(None));
    let read_by_batch = file(Some(unix_now() + 2));
    for f in [&gone, &kept, &forever, &read_by_batch] {
        store.insert_file(f, None).await.unwrap();
    }
    // A batch starts only on a file that has not expired; this one expires while it runs.
    let batch = new_batch(store, read_by_batch.id.parse().unwrap()).await;
    let refused = batch_on(gone.id.parse().unwrap());
    assert!(store.insert_batch(&refused).await.unwrap().is_none(), "a batch on an expired file");
    let missing = batch_on(FileId::generate());
    assert!(store.insert_batch(&missing).await.unwrap().is_none(), "a batch on a missing file");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    set_offset_ms(-5 * 60 * 1000);
    let seen = store.get_file(&gone.id.parse().unwrap(), None).await;
    set_offset_ms(0);
    assert!(seen.unwrap().is_none(), "an expired file is gone for its users");
    assert!(store.get_file(&kept.id.parse().unwrap(), None).await.unwrap().is_some());
    let listed = store
        .list_files(&FileListQuery { purpose: None, limit: 100, after: None, ascending: true }, None)
        .await
        .unwrap();
    let ids: Vec<&str> = listed.items.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, [kept.id.as_str(), forever.id.as_str()]);
    // The collector sees the expired file, but not one a running batch reads.
    let expired: Vec<String> = store.expired_files(10).await.unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(expired, [gone.id.as_str()]);
    assert!(!store.delete_expired_file(&read_by_batch.id.parse().unwrap()).await.unwrap());
    assert!(!store.delete_expired_file(&kept.id.parse().unwrap()).await.unwrap());
    assert!(store.delete_expired_file(&gone.id.parse().unwrap()).await.unwrap());
    // Once the batch has ended, its input goes too.
    assert!(store.request_cancel(&batch, None).await.unwrap().is_some());
    let expired: Vec<String> = store.expired_files(10).await.unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(expired, [read_by_batch.id.as_str()]);

    // One collector at a time, by database time.
    assert!(store.claim_singleton("gc", "w1", 200).await.unwrap());
    assert!(!store.claim_singleton("gc", "w2", 200).await.unwrap());
    assert!(store.claim_singleton("gc", "w1", 200).await.unwrap(), "the holder renews");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.claim_singleton("gc", "w2", 200).await.unwrap(), "an expired lease is taken over");
    assert!(!store.claim_singleton("gc", "w1", 200).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_expire_on_the_database_clock_and_one_collector_runs_at_a_time() {
    on_every_backend(|s| async move { expiry_and_the_collectors_lease_on(s.as_ref()).await }).await;
}

/// What the collector reads to tell live part segments from garbage: each chunk's current fence
/// and checkpointed parts while the batch runs, nothing once it has ended or for no batch.
async fn chunk_parts_on(store: &dyn Store) {
    let batch = running_batch(store, 2).await;
    let lease = loop {
        let l = store.claim_chunk("w", LEASE_MS).await.unwrap().expect("a chunk");
        if l.batch_id == batch {
            break l;
        }
    };
    assert_eq!(
        store.heartbeat(&[beat(&lease, Some(checkpoint(&[1, 2], 0)))], LEASE_MS).await.unwrap(),
        [BeatAnswer::Held]
    );
    let chunks = store.chunk_parts(&batch).await.unwrap().expect("a running batch");
    let of = |idx: i64| chunks.iter().find(|c| c.idx == idx).unwrap();
    assert_eq!(of(lease.chunk.idx).fence, lease.fence);
    assert_eq!(of(lease.chunk.idx).parts, checkpoint(&[1, 2], 0).parts);
    assert!(of(1 - lease.chunk.idx).parts.is_empty());
    // A release hands the chunk on under a higher fence; its checkpointed parts stay listed.
    assert_eq!(store.release_chunk(&lease).await.unwrap(), Fenced::Applied);
    let after = store.chunk_parts(&batch).await.unwrap().unwrap();
    let released = after.iter().find(|c| c.idx == lease.chunk.idx).unwrap();
    assert!(released.fence > lease.fence);
    assert_eq!(released.parts, checkpoint(&[1, 2], 0).parts);
    // Ended (cancelled while nothing is held: finalized at the next claim) or unknown: none.
    store.request_cancel(&batch, None).await.unwrap();
    let job = loop {
        let job = store.claim_finalization("f", LEASE_MS).await.unwrap().expect("the cancelled batch");
        if job.job.batch_id == batch {
            break job;
        }
    };
    assert_eq!(store.finish_finalization(&job, &FinalizeOutcome::default()).await.unwrap(), Fenced::Applied);
    assert!(store.chunk_parts(&batch).await.unwrap().is_none());
    assert!(store.chunk_parts(&BatchId::generate()).await.unwrap().is_none());
    // Stored bytes by purpose (the running batch's input file counts 100).
    let bytes = store.file_bytes().await.unwrap();
    assert!(bytes.iter().any(|(purpose, n)| purpose == "batch" && *n >= 100), "{bytes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_sees_fences_and_checkpointed_parts_of_running_batches_only() {
    on_every_backend(|s| async move { chunk_parts_on(s.as_ref()).await }).await;
}

/// What `GET /v1/batches/{id}/output` reads while a batch runs: the batch (scoped to its owner)
/// and its chunks from an index on, each with its checkpointed parts and whether it is done;
/// no chunks once the batch has ended.
async fn batch_progress_on(store: &dyn Store) {
    let batch = running_batch(store, 3).await;
    let mut leases = Vec::new();
    while leases.len() < 2 {
        let l = store.claim_chunk("w", LEASE_MS).await.unwrap().expect("a chunk");
        if l.batch_id == batch {
            leases.push(l);
        }
    }
    leases.sort_by_key(|l| l.chunk.idx);
    let (first, second) = (&leases[0], &leases[1]);
    // The first holds a checkpoint; the second completes.
    let held = checkpoint(&[1, 2], 0);
    assert_eq!(store.heartbeat(&[beat(first, Some(held.clone()))], LEASE_MS).await.unwrap(), [BeatAnswer::Held]);
    let mut finished = checkpoint(&(0..10).collect::<Vec<_>>(), 1);
    finished.parts.push("parts/x/10.err.jsonl".into());
    assert_eq!(store.complete_chunk(second, &finished).await.unwrap(), Fenced::Applied);

    let progress = store.batch_progress(&batch, None, 0).await.unwrap().expect("the batch");
    assert_eq!(progress.batch.id, batch.to_string());
    assert!(!progress.batch.status.is_terminal());
    let idxs: Vec<i64> = progress.chunks.iter().map(|c| c.idx).collect();
    assert_eq!(idxs, [0, 1, 2], "every chunk, in order");
    let of = |idx: i64| progress.chunks.iter().find(|c| c.idx == idx).unwrap().clone();
    assert_eq!(of(first.chunk.idx), ChunkProgress { idx: first.chunk.idx, done: false, parts: held.parts.clone() });
    assert_eq!(of(second.chunk.idx), ChunkProgress { idx: second.chunk.idx, done: true, parts: finished.parts });
    let untouched = 3 - first.chunk.idx - second.chunk.idx;
    assert_eq!(of(untouched), ChunkProgress { idx: untouched, done: false, parts: vec![] });
    // From an index on.
    let later = store.batch_progress(&batch, None, 1).await.unwrap().unwrap();
    assert_eq!(later.chunks.iter().map(|c| c.idx).collect::<Vec<_>>(), [1, 2]);
    // Another owner's batch, or none: absent.
    assert!(store.batch_progress(&batch, Some("mallory"), 0).await.unwrap().is_none());
    assert!(store.batch_progress(&BatchId::generate(), None, 0).await.unwrap().is_none());

    // Ended: the batch alone (its final files hold everything).
    store.request_cancel(&batch, None).await.unwrap();
    assert_eq!(store.release_chunk(first).await.unwrap(), Fenced::Applied);
    let job = loop {
        let job = store.claim_finalization("f", LEASE_MS).await.unwrap().expect("the cancelled batch");
        if job.job.batch_id == batch {
            break job;
        }
    };
    assert_eq!(store.finish_finalization(&job, &FinalizeOutcome::default()).await.unwrap(), Fenced::Applied);
    let ended = store.batch_progress(&batch, None, 0).await.unwrap().unwrap();
    assert_eq!(ended.batch.status, BatchStatus::Cancelled);
    assert!(ended.chunks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_progress_lists_chunks_in_order_while_running_and_none_once_ended() {
    on_every_backend(|s| async move { batch_progress_on(s.as_ref()).await }).await;
}

/// An endpoint of `owner` (`None`: operator-level) subscribed to `types`.
async fn webhook_endpoint(store: &dyn Store, id: &str, owner: Option<&str>, types: &[&str]) {
    let endpoint = webhooks::WebhookEndpoint {
        id: id.into(),
        owner: owner.map(Into::into),
        name: id.into(),
        url: "https://example.invalid/hook".into(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        created_at: unix_now(),
        updated_at: unix_now(),
    };
    store.insert_webhook_endpoint(&endpoint).await.unwrap();
}

/// Validates `owner`'s new batch: valid with one chunk of 10 lines, or invalid.
async fn validated_batch(store: &dyn Store, owner: Option<&str>, valid: bool) -> BatchId {
    let file = input_file(store, None).await;
    let new = NewBatch { owner: owner.map(Into::into), ..batch_on(file) };
    store.insert_batch(&new).await.unwrap().expect("the input file exists");
    let job = loop {
        let job = store.claim_validation("validator", LEASE_MS).await.unwrap().expect("a batch to validate");
        if job.batch_id == new.id {
            break job;
        }
    };
    let outcome = if valid {
        let chunk = ChunkSpec { idx: 0, first_line: 1, line_count: 10, byte_start: 0, byte_end: 10 };
        ValidationOutcome::Valid { model: "m".into(), total: 10, chunks: vec![chunk] }
    } else {
        ValidationOutcome::Invalid { errors: vec![] }
    };
    assert_eq!(store.finish_validation(&job, &outcome).await.unwrap(), Fenced::Applied);
    new.id
}

/// (event type, endpoint id) of every delivery of a batch.
async fn deliveries(store: &dyn Store, batch: &BatchId) -> Vec<(String, String)> {
    let mut d: Vec<_> = store
        .batch_webhook_deliveries(batch.as_str())
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.event_type, d.endpoint_id))
        .collect();
    d.sort();
    d
}

async fn webhook_outbox_on(store: &dyn Store) {
    webhook_endpoint(store, "we_alice", Some("alice"), &["batch.completed"]).await;
    webhook_endpoint(store, "we_alice_failed", Some("alice"), &["batch.failed"]).await;
    webhook_endpoint(store, "we_bob", Some("bob"), &["batch.completed", "batch.failed", "batch.cancelled"]).await;
    webhook_endpoint(store, "we_operator", None, &["batch.completed", "batch.failed", "batch.cancelled"]).await;
    let pair = |t: &str, e: &str| (t.to_string(), e.to_string());

    // Completed: one event, one delivery per matching endpoint; bob's gets none.
    let batch = validated_batch(store, Some("alice"), true).await;
    assert!(store.batch_webhook_events(batch.as_str()).await.unwrap().is_empty(), "in progress: no event");
    let lease = store.claim_chunk("w", LEASE_MS).await.unwrap().expect("the chunk");
    let all: Vec<usize> = (0..10).collect();
    assert_eq!(store.complete_chunk(&lease, &checkpoint(&all, 0)).await.unwrap(), Fenced::Applied);
    let job = store.claim_finalization("f", LEASE_MS).await.unwrap().expect("the finished batch");
    let out = FinalizeOutcome { output_bytes: Some(10), ..FinalizeOutcome::default() };
    assert_eq!(store.finish_finalization(&job, &out).await.unwrap(), Fenced::Applied);
    assert_eq!(store.finish_finalization(&job, &out).await.unwrap(), Fenced::Lost);
    assert_eq!(store.batch_webhook_events(batch.as_str()).await.unwrap(), ["batch.completed"]);
    assert_eq!(
        deliveries(store, &batch).await,
        [pair("batch.completed", "we_alice"), pair("batch.completed", "we_operator")]
    );

    // Failed validation, and a validating batch cancelled at once.
    let failed = validated_batch(store, Some("alice"), false).await;
    assert_eq!(store.batch_webhook_events(failed.as_str()).await.unwrap(), ["batch.failed"]);
    assert_eq!(
        deliveries(store, &failed).await,
        [pair("batch.failed", "we_alice_failed"), pair("batch.failed", "we_operator")]
    );
    let file = input_file(store, None).await;
    let new = NewBatch { owner: Some("bob".into()), ..batch_on(file) };
    store.insert_batch(&new).await.unwrap().unwrap();
    let (b, changed) = store.request_cancel(&new.id, None).await.unwrap().unwrap();
    assert!(changed && b.status == BatchStatus::Cancelled);
    assert!(!store.request_cancel(&new.id, None).await.unwrap().unwrap().1);
    assert_eq!(store.batch_webhook_events(new.id.as_str()).await.unwrap(), ["batch.cancelled"]);
    assert_eq!(
        deliveries(store, &new.id).await,
        [pair("batch.cancelled", "we_bob"), pair("batch.cancelled", "we_operator")]
    );
    assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 6);

    // Delivery: claimed once at a time, every attempt kept, retried until a 2xx.
    let fast = webhooks::RetrySchedule::from_base_ms(1);
    let claimed = store.claim_webhook_deliveries("d1", LEASE_MS, 100).await.unwrap();
    assert_eq!(claimed.len(), 6);
    assert!(store.claim_webhook_deliveries("d2", LEASE_MS, 100).await.unwrap().is_empty(), "held: not again");
    let first = claimed.iter().find(|d| d.endpoint_id == "we_alice").unwrap().clone();
    assert!(first.body.contains(batch.as_str()) && first.body.contains("\"type\":\"batch.completed\""));
    let fail = webhooks::AttemptRecord { status_code: Some(500), error: Some("status 500".into()), duration_ms: 3 };
    let ok = webhooks::AttemptRecord { status_code: Some(200), error: None, duration_ms: 2 };
    assert_eq!(store.record_webhook_attempt(&first, &fail, &fast).await.unwrap(), webhooks::DeliveryOutcome::Retrying);
    assert_eq!(store.record_webhook_attempt(&first, &ok, &fast).await.unwrap(), webhooks::DeliveryOutcome::Lost);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = store.claim_webhook_deliveries("d2", LEASE_MS, 100).await.unwrap();
    assert_eq!(again.len(), 1, "only the retried delivery is due");
    assert_eq!((again[0].id.as_str(), again[0].attempts), (first.id.as_str(), 1));
    assert_eq!(
        store.record_webhook_attempt(&again[0], &ok, &fast).await.unwrap(),
        webhooks::DeliveryOutcome::Delivered
    );
    let info = store.batch_webhook_deliveries(batch.as_str()).await.unwrap();
    let done = info.iter().find(|d| d.id == first.id).unwrap();
    assert_eq!(done.state, webhooks::DeliveryState::Delivered);
    assert_eq!(done.history, [(1, Some(500), Some("status 500".into())), (2, Some(200), None)]);
    // Past the horizon: given up.
    let none = webhooks::RetrySchedule { base_ms: 1, max_ms: 1, horizon_ms: 0 };
    let other = claimed.iter().find(|d| d.endpoint_id == "we_bob").unwrap();
    assert_eq!(store.record_webhook_attempt(other, &fail, &none).await.unwrap(), webhooks::DeliveryOutcome::Exhausted);
    assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 4);

    // Deleting an endpoint drops its pending deliveries; another owner cannot.
    assert!(!store.delete_webhook_endpoint("we_operator", Some("alice")).await.unwrap());
    assert!(store.delete_webhook_endpoint("we_operator", None).await.unwrap());
    assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 1);
    assert!(store.get_webhook_endpoint("we_bob", Some("alice")).await.unwrap().is_none());
    // Pruning the history keeps what is pending.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.prune_webhook_history(0).await.unwrap(), 2, "the delivered and the given-up one");
    assert_eq!(store.batch_webhook_deliveries(batch.as_str()).await.unwrap().len(), 0);
    assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 1);
    assert_eq!(deliveries(store, &failed).await, [pair("batch.failed", "we_alice_failed")]);
    assert_eq!(store.list_webhook_endpoints(None, 10, Some("alice")).await.unwrap().items.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_ends_records_one_event_and_one_delivery_per_matching_endpoint() {
    on_every_backend(|s| async move { webhook_outbox_on(s.as_ref()).await }).await;
}
