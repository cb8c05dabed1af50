//! Processing one claimed chunk: read its byte range, send every line its checkpoint lacks
//! upstream under the shared in-flight limit, stream the results into part segments, commit a
//! segment and record it as the chunk's checkpoint with every heartbeat, then complete the chunk
//! in one fenced transaction.
//!
//! A chunk whose holder died (or lost its lease, or handed it back) resumes: the next holder
//! keeps the checkpoint — the committed segments and which lines they answer — and sends only
//! the other lines. At most the lines answered since the last heartbeat are sent twice.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use vllm_batch_core::batch::{InputTokensDetails, OutputTokensDetails};
use vllm_batch_core::line::{is_blank, trim_line, RequestLine};
use vllm_batch_core::output::{error_line, output_line, LineFailure};
use vllm_batch_core::Usage;
use vllm_batch_metrics::metrics;
use vllm_batch_metrics::throughput::throughput;
use vllm_batch_store::{file_key, segment_key, BlobWriter, Checkpoint, ChunkBeat, ChunkLease, Fenced, FileStore};

use crate::dispatch::{send, Outcome, UpstreamResponse};
use crate::Shared;

/// Why dispatch of a chunk stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The batch is being cancelled: unsent lines become `batch_cancelled`.
    Cancelled,
    /// The completion window passed: unsent lines become `batch_expired`.
    Expired,
    /// Another worker owns the chunk now: drop everything.
    Lost,
    /// Shutting down: hand the chunk back.
    Release,
}

/// A held chunk as the heartbeat and the dispatch tasks see it.
pub(crate) struct ChunkState {
    pub lease: ChunkLease,
    /// Requests that failed after every retry (reported as one error per chunk).
    gave_up: AtomicI64,
    /// Lines not yet on the wire (they count in the worker's backlog).
    undispatched: AtomicI64,
    stop: watch::Sender<Option<StopReason>>,
    /// When the batch's completion window closes, on this process's monotonic clock (the
    /// database said how far away it was at the claim).
    deadline: tokio::time::Instant,
    /// Asks the part writer for a checkpoint (set once the chunk's task has started).
    checkpoints: Mutex<Option<mpsc::Sender<oneshot::Sender<Option<Checkpoint>>>>>,
    /// Lines of the last checkpoint the database took: a beat that has nothing newer only
    /// extends the lease.
    recorded: AtomicUsize,
}

impl ChunkState {
    pub fn new(lease: &ChunkLease) -> Arc<Self> {
        let answered = lease.checkpoint.done.len();
        Arc::new(ChunkState {
            lease: lease.clone(),
            gave_up: AtomicI64::new(0),
            undispatched: AtomicI64::new(lease.chunk.line_count - answered as i64),
            stop: watch::channel(None).0,
            deadline: tokio::time::Instant::now() + Duration::from_millis(lease.expires_in_ms.max(0) as u64),
            checkpoints: Mutex::new(None),
            recorded: AtomicUsize::new(answered),
        })
    }

    /// Lines this holder has to send (those its checkpoint lacks).
    pub fn lines_to_send(&self) -> i64 {
        self.undispatched.load(Ordering::Acquire)
    }

    pub fn key(&self) -> (String, i64, i64) {
        (self.lease.batch_id.to_string(), self.lease.chunk.idx, self.lease.fence)
    }

    /// The heartbeat of this chunk: the writer commits what it wrote since the last one, and
    /// the beat carries the checkpoint when it holds lines the database has not recorded yet.
    pub async fn beat(&self) -> ChunkBeat {
        let ask = self.checkpoints.lock().unwrap().clone();
        let mut checkpoint = None;
        if let Some(ask) = ask {
            let (tx, rx) = oneshot::channel();
            if ask.send(tx).await.is_ok() {
                checkpoint = rx.await.ok().flatten();
            }
        }
        let checkpoint = checkpoint.filter(|c| c.done.len() > self.recorded.load(Ordering::Acquire));
        ChunkBeat {
            batch_id: self.lease.batch_id.clone(),
            idx: self.lease.chunk.idx,
            fence: self.lease.fence,
            checkpoint,
        }
    }

    /// The database took this beat's checkpoint.
    pub fn recorded(&self, beat: &ChunkBeat) {
        if let Some(c) = &beat.checkpoint {
            self.recorded.fetch_max(c.done.len(), Ordering::AcqRel);
        }
    }

    /// Stops dispatch. Losing the lease or releasing it outranks cancellation and expiry.
    pub fn stop(&self, reason: StopReason) {
        self.stop.send_if_modified(|cur| match (*cur, reason) {
            (None, _) | (Some(StopReason::Cancelled | StopReason::Expired), StopReason::Lost | StopReason::Release) => {
                *cur = Some(reason);
                true
            }
            _ => false,
        });
    }

    pub fn reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }

    /// Resolves when dispatch must stop, including when the completion window passes.
    pub async fn stopped(&self) -> StopReason {
        let mut rx = self.stop.subscribe();
        tokio::select! {
            r = rx.wait_for(|r| r.is_some()) => r.map(|r| r.expect("waited for Some")).unwrap_or(StopReason::Lost),
            _ = tokio::time::sleep_until(self.deadline) => {
                self.stop(StopReason::Expired);
                self.reason().unwrap_or(StopReason::Expired)
            }
        }
    }

    /// Whether some of its lines have not gone on the wire yet.
    pub fn has_lines_to_send(&self) -> bool {
        self.undispatched.load(Ordering::Acquire) > 0
    }

    /// Called once per line when its request first goes on the wire.
    pub fn dispatched(&self, s: &Shared) {
        // After its last line the chunk no longer counts against claiming ahead.
        let last = self.undispatched.fetch_sub(1, Ordering::AcqRel) == 1;
        let before = s.backlog.fetch_sub(1, Ordering::AcqRel);
        // Only the crossing below the capacity is news to the claimer (not every dispatch).
        let capacity = s.router.total_capacity() as i64;
        if last || (before >= capacity && before - 1 < capacity) {
            s.claim_wake.notify_one();
        }
    }
}

enum Part {
    Out(Vec<u8>),
    Err(Vec<u8>),
}

/// One answered line for the part writer: its offset in the chunk, its output or error line,
/// and the usage of its response.
struct Answered {
    offset: usize,
    part: Part,
    usage: Usage,
}

/// Runs a chunk to its end and always gives its backlog and registry entry back.
pub(crate) async fn process(s: Arc<Shared>, lease: ChunkLease, state: Arc<ChunkState>) {
    let started = std::time::Instant::now();
    let m = metrics();
    let outcome = match run(&s, &lease, &state).await {
        Ok(Some(done)) => {
            info!(
                completed = done.completed,
                failed = done.failed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "chunk completed"
            );
            m.chunk_duration.observe(started.elapsed().as_secs_f64());
            m.chunk_size.observe(lease.chunk.line_count as f64);
            let gave_up = state.gave_up.load(Ordering::Relaxed);
            if gave_up > 0 {
                m.errors.with_label_values(&["upstream"]).inc();
                error!(requests = gave_up, "requests failed after every retry; they are in the batch's error file");
            }
            "completed"
        }
        Ok(None) if state.reason() == Some(StopReason::Release) => "released",
        Ok(None) => {
            warn!(reason = ?state.reason(), "chunk not completed; another worker will take it");
            "lost"
        }
        Err(e) => {
            m.errors.with_label_values(&["chunk"]).inc();
            error!(error = %e, "chunk failed; its lease will expire and it will be retried");
            "error"
        }
    };
    m.chunks_processed.with_label_values(&[outcome]).inc();
    s.held.lock().unwrap().remove(&state.key());
    s.backlog.fetch_sub(state.undispatched.swap(0, Ordering::AcqRel), Ordering::AcqRel);
    // Room for another chunk; and maybe the batch's last chunk: the finalizer looks now.
    s.claim_wake.notify_one();
    s.wake.notify_waiters();
}

/// The lines of a chunk, each as its custom id and its body (a slice of the chunk's bytes), in
/// order: a line's offset in the chunk is its index here.
fn split_lines(data: &Bytes, first_is_file_start: bool) -> Result<Vec<(String, Bytes)>, String> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for raw in data.split(|&b| b == b'\n') {
        let line = trim_line(raw, first_is_file_start && start == 0);
        let line_offset = start + (line.as_ptr() as usize - raw.as_ptr() as usize);
        start += raw.len() + 1;
        if is_blank(line) {
            continue;
        }
        let parsed: RequestLine<'_> =
            serde_json::from_slice(line).map_err(|e| format!("validated line no longer parses: {e}"))?;
        let body_offset = line_offset + (parsed.body.get().as_ptr() as usize - line.as_ptr() as usize);
        let body = data.slice(body_offset..body_offset + parsed.body.get().len());
        out.push((parsed.custom_id.into_owned(), body));
    }
    Ok(out)
}

/// The chunk's final checkpoint when this holder completed it; `None` when it stopped (lost or
/// handed back) or another holder took it.
async fn run(
    s: &Arc<Shared>,
    lease: &ChunkLease,
    state: &Arc<ChunkState>,
) -> vllm_batch_store::Result<Option<Checkpoint>> {
    let c = &lease.chunk;
    let data = s.files.read_range(&file_key(&lease.input_file_id), c.byte_start as u64, c.byte_end as u64).await?;
    let lines = split_lines(&Bytes::from(data), c.first_line == 1).map_err(vllm_batch_store::StoreError::Corrupt)?;
    let (tx, rx) = mpsc::channel::<Answered>(1024);
    let (ask_tx, ask_rx) = mpsc::channel(1);
    let writer = PartWriter {
        files: s.files.clone(),
        lease: lease.clone(),
        seg: 0,
        out: None,
        err: None,
        pending: Vec::new(),
        checkpoint: lease.checkpoint.clone(),
    };
    let writer = tokio::spawn(writer.run(rx, ask_rx));
    *state.checkpoints.lock().unwrap() = Some(ask_tx.clone());

    let line_count = lines.len();
    let mut tasks = JoinSet::new();
    for (offset, (custom_id, body)) in lines.into_iter().enumerate() {
        if lease.checkpoint.done.contains(offset) {
            continue;
        }
        let (s, state, tx) = (s.clone(), state.clone(), tx.clone());
        tasks.spawn(async move {
            let mut usage = Usage::default();
            let part = match send(&s, &state, body).await {
                Outcome::Success(UpstreamResponse { status, request_id, body }) => {
                    throughput().record(add_usage(&mut usage, &body));
                    let raw: &RawValue = serde_json::from_slice(&body).expect("checked to be JSON");
                    Part::Out(output_line(&custom_id, status, &request_id, raw))
                }
                Outcome::Failure { code, message, response } => {
                    if code == "upstream_error" {
                        state.gave_up.fetch_add(1, Ordering::Relaxed);
                    }
                    let resp = response.as_ref().map(|r| {
                        let body = serde_json::from_slice::<&RawValue>(&r.body).expect("JSON by construction");
                        (r.status, r.request_id.as_str(), body)
                    });
                    Part::Err(error_line(&custom_id, resp, LineFailure { code, message: &message }))
                }
                Outcome::Stopped(StopReason::Cancelled) => Part::Err(error_line(
                    &custom_id,
                    None,
                    LineFailure {
                        code: "batch_cancelled",
                        message: "The batch was cancelled before this request was sent.",
                    },
                )),
                Outcome::Stopped(StopReason::Expired) => Part::Err(error_line(
                    &custom_id,
                    None,
                    LineFailure {
                        code: "batch_expired",
                        message: "The batch expired before this request was completed.",
                    },
                )),
                Outcome::Stopped(StopReason::Lost | StopReason::Release) => return,
            };
            let _ = tx.send(Answered { offset, part, usage }).await;
        });
    }
    let mut failed_tasks = 0;
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            error!(error = %e, "request task failed");
            failed_tasks += 1;
        }
    }
    *state.checkpoints.lock().unwrap() = None;
    drop(tx);
    if matches!(state.reason(), Some(StopReason::Lost | StopReason::Release)) {
        writer.abort();
        return Ok(None);
    }
    // Every answer is in the channel: the last checkpoint commits the rest.
    let (reply, last) = oneshot::channel();
    let _ = ask_tx.send(reply).await;
    drop(ask_tx);
    let last = last.await.ok().flatten();
    writer.await.map_err(|e| std::io::Error::other(e.to_string()))??;
    let done = last.unwrap_or_else(|| lease.checkpoint.clone());
    // A chunk completes only with an answer for every line: otherwise it is left to its lease,
    // and the next holder sends what its last recorded checkpoint lacks.
    let answered = done.done.len();
    if failed_tasks > 0 || answered != line_count {
        return Err(vllm_batch_store::StoreError::Corrupt(format!(
            "{answered} of the chunk's {line_count} lines answered ({failed_tasks} request tasks failed); \
             the chunk resumes from its checkpoint"
        )));
    }
    let fenced = complete(s, lease, &done).await?;
    if fenced.applied() {
        // Counted once the results are committed, so the counters agree with the batch (lines
        // an earlier holder answered are counted here too: it never completed the chunk).
        let m = metrics();
        m.requests_processed.with_label_values(&["completed"]).inc_by(done.completed as u64);
        m.requests_processed.with_label_values(&["failed"]).inc_by(done.failed as u64);
        m.tokens_generated.inc_by(done.usage.output_tokens as u64);
        m.prompt_tokens.inc_by(done.usage.input_tokens as u64);
    }
    Ok(fenced.applied().then_some(done))
}

/// Records the finished chunk, retrying while the database is unreachable (a partition or a
/// restart): its parts are written, and the fenced update either lands or tells that another
/// worker has taken the chunk since. Gives up after `COMPLETE_PATIENCE`; the chunk then resumes
/// from its last checkpoint under a new lease.
async fn complete(s: &Shared, lease: &ChunkLease, done: &Checkpoint) -> vllm_batch_store::Result<Fenced> {
    const COMPLETE_PATIENCE: Duration = Duration::from_secs(300);
    let deadline = tokio::time::Instant::now() + COMPLETE_PATIENCE;
    let mut wait = Duration::from_millis(200);
    loop {
        match s.store.complete_chunk(lease, done).await {
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                warn!(error = %e, "recording the finished chunk failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Writes a chunk's answers into part segments and commits one segment per checkpoint.
struct PartWriter {
    files: Arc<dyn FileStore>,
    lease: ChunkLease,
    /// The number of the segment being written.
    seg: u32,
    /// The open segment's output and error writers, each opened at its first line.
    out: Option<Box<dyn BlobWriter>>,
    err: Option<Box<dyn BlobWriter>>,
    /// What the open segment holds: offsets, and per line whether it succeeded and its usage.
    pending: Vec<(usize, bool, Usage)>,
    /// Everything committed so far, the claim's checkpoint included.
    checkpoint: Checkpoint,
}

impl PartWriter {
    /// Writes answers as they come; answers each checkpoint request with the checkpoint after
    /// committing the open segment (`None` when nothing was ever answered). Ends when both the
    /// answers and the requests end; a segment never committed is left to the file store's
    /// temporary files.
    async fn run(
        mut self,
        mut answers: mpsc::Receiver<Answered>,
        mut asks: mpsc::Receiver<oneshot::Sender<Option<Checkpoint>>>,
    ) -> vllm_batch_store::Result<()> {
        let (mut answers_open, mut asks_open) = (true, true);
        while answers_open || asks_open {
            tokio::select! {
                // Answers first: a checkpoint asked for after the last answer includes it.
                biased;
                a = answers.recv(), if answers_open => match a {
                    Some(a) => self.write(a).await?,
                    None => answers_open = false,
                },
                ask = asks.recv(), if asks_open => match ask {
                    Some(reply) => {
                        let cp = self.commit().await?;
                        let _ = reply.send(cp);
                    }
                    None => asks_open = false,
                },
            }
        }
        Ok(())
    }

    async fn write(&mut self, a: Answered) -> vllm_batch_store::Result<()> {
        let (slot, kind, line, ok) = match a.part {
            Part::Out(line) => (&mut self.out, "out", line, true),
            Part::Err(line) => (&mut self.err, "err", line, false),
        };
        if slot.is_none() {
            let l = &self.lease;
            *slot = Some(self.files.writer(&segment_key(&l.batch_id, l.chunk.idx, l.fence, self.seg, kind)).await?);
        }
        slot.as_mut().expect("opened above").write(&line).await?;
        self.pending.push((a.offset, ok, a.usage));
        Ok(())
    }

    /// Commits the open segment into the checkpoint.
    async fn commit(&mut self) -> vllm_batch_store::Result<Option<Checkpoint>> {
        if !self.pending.is_empty() {
            let l = &self.lease;
            for (writer, kind) in [(self.out.take(), "out"), (self.err.take(), "err")] {
                if let Some(w) = writer {
                    w.commit().await?;
                    self.checkpoint.parts.push(segment_key(&l.batch_id, l.chunk.idx, l.fence, self.seg, kind));
                }
            }
            self.seg += 1;
            for (offset, ok, usage) in self.pending.drain(..) {
                self.checkpoint.done.insert(offset);
                if ok {
                    self.checkpoint.completed += 1;
                } else {
                    self.checkpoint.failed += 1;
                }
                self.checkpoint.usage += &usage;
            }
        }
        Ok((!self.checkpoint.done.is_empty()).then(|| self.checkpoint.clone()))
    }
}

/// An upstream answer's `usage`, in the chat/completions names or the Responses API's
/// (`input_tokens`, `output_tokens` and their details).
#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: i64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: i64,
    #[serde(default)]
    total_tokens: i64,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<Details>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<Details>,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<i64>,
    #[serde(default)]
    reasoning_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Adds an upstream response's `usage` to `s` (OpenAI's batch `usage` names: prompt → input,
/// completion → output); returns the completion tokens.
fn add_usage(s: &mut Usage, body: &[u8]) -> u64 {
    let Ok(WithUsage { usage: Some(u) }) = serde_json::from_slice::<WithUsage>(body) else { return 0 };
    let generated = u.completion_tokens.max(0) as u64;
    s.input_tokens += u.prompt_tokens;
    s.output_tokens += u.completion_tokens;
    s.total_tokens += u.total_tokens;
    let cached = u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0);
    let reasoning = u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0);
    s.input_tokens_details = InputTokensDetails { cached_tokens: s.input_tokens_details.cached_tokens + cached };
    s.output_tokens_details =
        OutputTokensDetails { reasoning_tokens: s.output_tokens_details.reasoning_tokens + reasoning };
    generated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_into_ids_and_verbatim_bodies() {
        let data = Bytes::from_static(
            b"\xEF\xBB\xBF{\"custom_id\":\"a\",\"body\":{\"x\": 1}}\r\n\n{\"body\":{\"y\":[2]},\"custom_id\":\"b\"}\n",
        );
        let lines = split_lines(&data, true).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, "a");
        assert_eq!(&lines[0].1[..], b"{\"x\": 1}");
        assert_eq!(lines[1].0, "b");
        assert_eq!(&lines[1].1[..], b"{\"y\":[2]}");
    }

    #[test]
    fn usage_is_read_in_both_the_chat_and_the_responses_names() {
        let mut u = Usage::default();
        let chat = br#"{"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,
            "prompt_tokens_details":{"cached_tokens":2}}}"#;
        assert_eq!(add_usage(&mut u, chat), 3);
        // vLLM's /v1/responses answer (0.32), trimmed.
        let responses = br#"{"object":"response","usage":{"input_tokens":32,
            "input_tokens_details":{"cached_tokens":1,"cache_write_tokens":0},"output_tokens":8,
            "output_tokens_details":{"reasoning_tokens":4,"tool_output_tokens":0},"total_tokens":40}}"#;
        assert_eq!(add_usage(&mut u, responses), 8);
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (37, 11, 48));
        assert_eq!(u.input_tokens_details.cached_tokens, 3);
        assert_eq!(u.output_tokens_details.reasoning_tokens, 4);
    }
}
