//! The continuous-batching cost model: a vLLM-like scheduler step by step, as
//! pure logic with no clock. The simulator's engine task ([`crate::engine`])
//! drives it against real time; [`ideal_seconds`] drives it with every job
//! waiting at t = 0 and no sleeping, which gives the engine's capacity bound
//! for a set of jobs. Both use [`Scheduler`], so they cannot disagree.
//!
//! One step: admit waiting jobs (FIFO) until `max_num_seqs` run; the step
//! takes `step_base_ms + step_per_seq_ms * running + prefill_ms_per_token *
//! (prompt tokens of the jobs admitted in this step)`; at its end every running
//! job has produced one more token, and jobs that have all their completion
//! tokens leave.

use std::collections::VecDeque;
use std::time::Duration;

/// Step-time parameters of the continuous-batching engine.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CostModel {
    /// Fixed time of every step (reading the weights once), in milliseconds.
    /// The engine mode is on when this is above zero.
    pub step_base_ms: f64,
    /// Extra step time per running sequence (its KV cache), in milliseconds.
    pub step_per_seq_ms: f64,
    /// Extra step time per prompt token of the jobs admitted in that step
    /// (their prefill), in milliseconds.
    pub prefill_ms_per_token: f64,
}

impl CostModel {
    /// Whether the engine mode is on (`step_base_ms > 0`).
    pub fn is_enabled(&self) -> bool {
        self.step_base_ms > 0.0
    }

    /// Time of one step with `running` sequences, of which the newly admitted
    /// ones bring `admitted_prompt_tokens` prompt tokens to prefill.
    pub fn step_time(&self, running: usize, admitted_prompt_tokens: u64) -> Duration {
        let ms = self.step_base_ms.max(0.0)
            + self.step_per_seq_ms.max(0.0) * running as f64
            + self.prefill_ms_per_token.max(0.0) * admitted_prompt_tokens as f64;
        Duration::from_secs_f64(ms / 1000.0)
    }
}

/// One job in the scheduler: its prompt size, the tokens it still has to
/// produce, its priority (vLLM's: lower runs first), and what the caller
/// attached to it (a reply channel, or nothing).
struct Job<T> {
    prompt_tokens: u64,
    tokens_left: u64,
    priority: i64,
    payload: T,
}

/// What [`Scheduler::begin_step`] decided for a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// How long the step takes.
    pub duration: Duration,
    /// Jobs running in it (admitted ones included).
    pub running: usize,
    /// Jobs admitted at its start.
    pub admitted: usize,
    /// Prompt tokens of the admitted jobs.
    pub admitted_prompt_tokens: u64,
}

/// The scheduler state: the waiting queue and the running set.
///
/// The waiting queue is FIFO, or with `priority` on (vLLM's `--scheduling-policy
/// priority`) ordered by `(priority, arrival)` as vLLM's V1 scheduler orders it:
/// a waiting job of a lower value is admitted first. vLLM preempts a running
/// job (the one of the highest `(priority, arrival)`) only when the KV cache
/// cannot grow; the simulator has no KV cache, so it never preempts, and a job
/// waits for the next free slot whatever its priority — as in vLLM while its
/// KV cache has room.
pub struct Scheduler<T> {
    model: CostModel,
    max_num_seqs: usize,
    priority: bool,
    waiting: VecDeque<Job<T>>,
    running: Vec<Job<T>>,
}

impl<T> Scheduler<T> {
    /// An empty scheduler running at most `max_num_seqs` jobs (at least 1).
    pub fn new(model: CostModel, max_num_seqs: usize) -> Self {
        Self::with_policy(model, max_num_seqs, false)
    }

    /// Like `new`, with vLLM's priority policy when `priority` is true.
    pub fn with_policy(model: CostModel, max_num_seqs: usize, priority: bool) -> Self {
        Scheduler { model, max_num_seqs: max_num_seqs.max(1), priority, waiting: VecDeque::new(), running: Vec::new() }
    }

    /// Queues a job. It runs for `max(completion_tokens, 1)` steps: a job
    /// without completion tokens (an embedding) still needs its prefill step.
    pub fn enqueue(&mut self, prompt_tokens: u64, completion_tokens: u64, payload: T) {
        self.enqueue_with_priority(prompt_tokens, completion_tokens, 0, payload);
    }

    /// Queues a job of `priority` (ignored without the priority policy).
    pub fn enqueue_with_priority(&mut self, prompt_tokens: u64, completion_tokens: u64, priority: i64, payload: T) {
        let job = Job { prompt_tokens, tokens_left: completion_tokens.max(1), priority, payload };
        if self.priority {
            // After every job of the same or a lower value: (priority, arrival) order.
            let at = self.waiting.partition_point(|w| w.priority <= priority);
            self.waiting.insert(at, job);
        } else {
            self.waiting.push_back(job);
        }
    }

    /// The payloads of the waiting jobs, in admission order.
    pub fn waiting_payloads(&self) -> impl Iterator<Item = &T> {
        self.waiting.iter().map(|j| &j.payload)
    }

    /// The payloads of the running jobs.
    pub fn running_payloads(&self) -> impl Iterator<Item = &T> {
        self.running.iter().map(|j| &j.payload)
    }

    /// Jobs waiting to be admitted.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Jobs in the running set.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Starts a step: drops running jobs for which `is_live` is false (their
    /// client went away: vLLM aborts them), admits live waiting jobs in FIFO
    /// order (skipping dead ones) up to `max_num_seqs`, and prices the step.
    /// `None` when nothing is left to run.
    pub fn begin_step(&mut self, mut is_live: impl FnMut(&T) -> bool) -> Option<Step> {
        self.running.retain(|job| is_live(&job.payload));
        let mut admitted = 0;
        let mut admitted_prompt_tokens = 0;
        while self.running.len() < self.max_num_seqs {
            let Some(job) = self.waiting.pop_front() else { break };
            if !is_live(&job.payload) {
                continue;
            }
            admitted += 1;
            admitted_prompt_tokens += job.prompt_tokens;
            self.running.push(job);
        }
        if self.running.is_empty() {
            return None;
        }
        let running = self.running.len();
        Some(Step {
            duration: self.model.step_time(running, admitted_prompt_tokens),
            running,
            admitted,
            admitted_prompt_tokens,
        })
    }

    /// Ends a step: every running job has produced one more token; those that
    /// are complete leave the running set and their payloads are appended to
    /// `finished` (in admission order).
    pub fn end_step(&mut self, finished: &mut Vec<T>) {
        self.end_step_with(finished, |_| {});
    }

    /// Like `end_step`, calling `on_token` on every job's payload as it gets
    /// its token (before a finished one is handed back).
    pub fn end_step_with(&mut self, finished: &mut Vec<T>, mut on_token: impl FnMut(&mut T)) {
        let before = std::mem::take(&mut self.running);
        self.running.reserve(before.len());
        for mut job in before {
            on_token(&mut job.payload);
            job.tokens_left -= 1;
            if job.tokens_left == 0 {
                finished.push(job.payload);
            } else {
                self.running.push(job);
            }
        }
    }

    /// Drops every job, waiting and running, and hands back their payloads.
    pub fn drain(&mut self) -> Vec<T> {
        self.running.drain(..).chain(self.waiting.drain(..)).map(|job| job.payload).collect()
    }
}

/// What the engine does with a set of jobs all waiting at t = 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ideal {
    /// Time until the last job finishes, in seconds.
    pub seconds: f64,
    /// Steps taken.
    pub steps: u64,
    /// Σ step time × running / `max_num_seqs`, in seconds.
    pub occupancy_seconds: f64,
}

/// Runs the scheduler over `jobs` (`(prompt_tokens, completion_tokens)`, all
/// waiting at t = 0, in this order) without sleeping.
pub fn ideal(model: &CostModel, max_num_seqs: usize, jobs: &[(u64, u64)]) -> Ideal {
    let mut scheduler = Scheduler::new(*model, max_num_seqs);
    for &(prompt, completion) in jobs {
        scheduler.enqueue(prompt, completion, ());
    }
    let max_num_seqs = max_num_seqs.max(1) as f64;
    let mut out = Ideal::default();
    let mut finished = Vec::new();
    while let Some(step) = scheduler.begin_step(|_| true) {
        let secs = step.duration.as_secs_f64();
        out.seconds += secs;
        out.occupancy_seconds += secs * step.running as f64 / max_num_seqs;
        out.steps += 1;
        scheduler.end_step(&mut finished);
        finished.clear();
    }
    out
}

/// The time the engine needs for `jobs` when every one of them is waiting at
/// t = 0: no client can finish them sooner, so it is the capacity bound a
/// batch run is measured against.
pub fn ideal_seconds(model: &CostModel, max_num_seqs: usize, jobs: &[(u64, u64)]) -> f64 {
    ideal(model, max_num_seqs, jobs).seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: CostModel = CostModel { step_base_ms: 10.0, step_per_seq_ms: 1.0, prefill_ms_per_token: 0.5 };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn one_job_runs_one_step_per_token_and_prefills_once() {
        // Step 1: 10 + 1·1 + 0.5·4 = 13 ms; steps 2 and 3: 11 ms each.
        let r = ideal(&MODEL, 4, &[(4, 3)]);
        assert_eq!(r.steps, 3);
        assert!(close(r.seconds, 0.035), "{r:?}");
        assert!(close(r.occupancy_seconds, 0.035 / 4.0), "{r:?}");
    }

    #[test]
    fn jobs_share_steps_and_leave_when_done() {
        // Both admitted at once: step 1 = 10 + 2 + 0.5·(2+6) = 16; the first
        // job (1 token) leaves; step 2 = 10 + 1 = 11.
        let r = ideal(&MODEL, 8, &[(2, 1), (6, 2)]);
        assert_eq!(r.steps, 2);
        assert!(close(r.seconds, 0.027), "{r:?}");
        assert!(close(r.occupancy_seconds, (0.016 * 2.0 + 0.011) / 8.0), "{r:?}");
    }

    #[test]
    fn waiting_jobs_are_admitted_fifo_when_a_slot_frees() {
        // max_num_seqs 1: A (2 tokens) runs steps 1–2, B (1 token) step 3.
        // 10+1+0.5·2 = 12, 11, then 10+1+0.5·4 = 13 → 36 ms.
        let r = ideal(&MODEL, 1, &[(2, 2), (4, 1)]);
        assert_eq!(r.steps, 3);
        assert!(close(r.seconds, 0.036), "{r:?}");
        assert!(close(r.occupancy_seconds, 0.036), "full the whole time");
    }

    #[test]
    fn embeddings_take_one_step() {
        let r = ideal(&MODEL, 4, &[(10, 0)]);
        assert_eq!(r.steps, 1);
        assert!(close(r.seconds, 0.016), "{r:?}");
    }

    #[test]
    fn the_priority_policy_admits_lower_values_first_and_fifo_within_one() {
        let mut s = Scheduler::with_policy(MODEL, 1, true);
        for (name, priority) in [("bulk-1", 10), ("chat-1", 0), ("bulk-2", 10), ("urgent", -5), ("chat-2", 0)] {
            s.enqueue_with_priority(1, 1, priority, name);
        }
        let mut order = Vec::new();
        while s.begin_step(|_| true).is_some() {
            s.end_step(&mut order);
        }
        assert_eq!(order, ["urgent", "chat-1", "chat-2", "bulk-1", "bulk-2"]);
        // Without the policy: arrival order.
        let mut s = Scheduler::new(MODEL, 1);
        for (name, priority) in [("a", 10), ("b", 0)] {
            s.enqueue_with_priority(1, 1, priority, name);
        }
        let mut order = Vec::new();
        while s.begin_step(|_| true).is_some() {
            s.end_step(&mut order);
        }
        assert_eq!(order, ["a", "b"]);
    }

    #[test]
    fn no_jobs_no_time() {
        assert_eq!(ideal_seconds(&MODEL, 4, &[]), 0.0);
    }

    #[test]
    fn begin_and_end_step_track_the_sets() {
        let mut s = Scheduler::new(MODEL, 2);
        for (i, c) in [3u64, 1, 2].into_iter().enumerate() {
            s.enqueue(0, c, i);
        }
        let step = s.begin_step(|_| true).unwrap();
        assert_eq!((step.running, step.admitted, s.waiting()), (2, 2, 1));
        let mut done = Vec::new();
        s.end_step(&mut done);
        assert_eq!(done, vec![1]);
        let step = s.begin_step(|_| true).unwrap();
        assert_eq!((step.running, step.admitted, s.waiting()), (2, 1, 0));
        s.end_step(&mut done);
        s.end_step(&mut done);
        assert_eq!(done, vec![1, 0, 2]);
        assert!(s.begin_step(|_| true).is_none());
    }

    #[test]
    fn dead_jobs_are_dropped_and_skipped() {
        let mut s = Scheduler::new(MODEL, 2);
        for i in 0..4 {
            s.enqueue(1, 5, i);
        }
        s.begin_step(|_| true).unwrap();
        // Job 0 (running) and job 2 (waiting) lost their clients.
        let step = s.begin_step(|&i| i != 0 && i != 2).unwrap();
        assert_eq!((step.running, step.admitted, step.admitted_prompt_tokens), (2, 1, 1));
        assert_eq!(s.waiting(), 0);
        assert_eq!(s.drain(), vec![1, 3]);
    }

    #[test]
    fn capacity_bound_scales_with_batching() {
        // 64 identical jobs: one at a time vs. all together.
        let jobs = vec![(0, 10); 64];
        let model = CostModel { step_base_ms: 10.0, step_per_seq_ms: 0.0, prefill_ms_per_token: 0.0 };
        assert_eq!(ideal(&model, 1, &jobs).steps, 640);
        assert_eq!(ideal(&model, 64, &jobs).steps, 10);
        assert!(close(ideal_seconds(&model, 64, &jobs), 0.1));
    }
}
