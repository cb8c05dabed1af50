//! Crash safety with real processes on one SQLite file: `kill -9` of a standalone worker at
//! several points, and a worker paused past its lease (SIGSTOP) that must not overwrite the
//! new owner's results when it wakes (SIGCONT).

use std::time::Duration;

use crate::support::*;

fn worker(dir: &std::path::Path, sim: &SimHandle, extra: &[&str]) -> Proc {
    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    Proc::start("worker", dir, &args)
}

fn api(dir: &std::path::Path, sim: &SimHandle) -> Proc {
    migrate(dir, &[]);
    let upstream = sim.base_url();
    Proc::start("api", dir, &["--upstream", upstream.as_str()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_then_a_new_worker_finishes() {
    let sim = sim(SimConfig { max_num_seqs: 16, base_latency_ms: 20, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path(), &sim);
    let c = api.client();
    let n = 4000;
    let id = c.submit(&chat_lines(n)).await;
    let mut w = worker(dir.path(), &sim, &["--chunk-size", "100"]);
    for fraction in [0.1, 0.35, 0.6, 0.85] {
        let at = (n as f64 * fraction) as i64;
        let b = c.wait_until(&id, 2 * MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= at).await;
        assert_eq!(b["status"], "in_progress", "killed before the end: {b}");
        w.kill9();
        w = worker(dir.path(), &sim, &["--chunk-size", "100"]);
    }
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert_eq!(out.len(), n);
    assert!(sim.stats().requests_received as usize >= n, "killed chunks were redone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_cannot_overwrite_the_new_owner() {
    let sim = sim(SimConfig { max_num_seqs: 8, base_latency_ms: 100, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path(), &sim);
    let c = api.client();
    let n = 400;
    let id = c.submit(&chat_lines(n)).await;
    let a = worker(dir.path(), &sim, &["--chunk-size", "50", "--worker-id", "paused-a"]);
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 20).await;
    a.signal("STOP");
    let b = worker(dir.path(), &sim, &["--chunk-size", "50", "--worker-id", "new-owner-b"]);
    // With SQLite, a process frozen inside a write transaction keeps the database's write lock:
    // no one can write until it resumes (README, "Known limits"). If A froze there, B makes no
    // progress; let A run a moment and freeze it again, outside a transaction this time.
    let mut freezes = 1;
    loop {
        let deadline = std::time::Instant::now() + Duration::from_secs(12);
        while std::time::Instant::now() < deadline && !b.logs().iter().any(|l| l.contains("chunk completed")) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if b.logs().iter().any(|l| l.contains("chunk completed")) {
            break;
        }
        assert!(freezes < 5, "B never made progress; B's logs:\n{}", b.logs().join("\n"));
        a.signal("CONT");
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.signal("STOP");
        freezes += 1;
    }
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    let before = c.content(done["output_file_id"].as_str().unwrap()).await;
    check_exactly_once(&done, &out, &err, n);

    a.signal("CONT");
    // Give the woken worker time to finish its in-flight requests and try to write.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !a.logs().iter().any(|l| l.contains("lease lost") || l.contains("chunk not completed")) {
        assert!(std::time::Instant::now() < deadline, "paused worker never noticed; logs:\n{}", a.logs().join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = c.batch(&id).await;
    assert_eq!(after, done, "the batch did not change after the stale worker woke");
    assert_eq!(c.content(done["output_file_id"].as_str().unwrap()).await, before);
    drop(b);
}

/// `kill -9` of `serve` in the middle of its only chunk, then `serve` again on the same data
/// folder: the new process resumes the chunk from its checkpoint. The upstream is sent again at
/// most the lines that were in flight at the kill or answered after the last heartbeat (not the
/// whole chunk), and the visible `request_counts.completed` never goes back (sampled every
/// 100 ms through the kill and the restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_chunk_resumes_from_the_checkpoint() {
    // 8 at a time, 0.5 s each: ~16 lines a second, so a heartbeat interval holds ~11 answers.
    let sim = sim(SimConfig { max_num_seqs: 8, base_latency_ms: 500, ..SimConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = sim.base_url();
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend_from_slice(FAST);
    // As many in flight as the upstream runs, and no time-outs: every request sent is a line.
    args.extend_from_slice(&["--concurrency", "fixed", "--max-in-flight", "8", "--request-timeout", "60s"]);
    let mut first = Proc::start("serve", dir.path(), &args);
    let c = first.client();
    let n = 200;
    let id = c.submit(&chat_lines(n)).await;
    let mut seen = Vec::new();
    loop {
        let b = c.batch(&id).await;
        let completed = b["request_counts"]["completed"].as_i64().unwrap();
        seen.push(completed);
        if completed >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = c.batch(&id).await["request_counts"]["completed"].as_i64().unwrap();
    let at_kill = sim.stats();
    first.kill9();
    let in_flight = at_kill.requests_received - at_kill.responses_ok - at_kill.faults_injected;
    // Answered by the upstream but not yet in a recorded checkpoint.
    let unrecorded = at_kill.responses_ok.saturating_sub(before as u64);
    assert!(before >= 100 && before < n as i64, "killed mid-chunk: {before}");

    let second = Proc::start("serve", dir.path(), &args);
    let c = second.client();
    let done = loop {
        if let Ok(b) = reqwest::get(c.url(&format!("/v1/batches/{id}"))).await {
            if let Ok(b) = b.json::<serde_json::Value>().await {
                seen.push(b["request_counts"]["completed"].as_i64().unwrap());
                if b["status"] == "completed" {
                    break b;
                }
            }
        }
        assert!(seen.len() < 1200, "not done within ~2 minutes: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "completed went back: {seen:?}");
    let sent_again = sim.stats().requests_received - n as u64;
    eprintln!(
        "killed at {before} of {n} visible ({} answered, {in_flight} in flight): {sent_again} sent again",
        at_kill.responses_ok
    );
    assert!(
        sent_again <= in_flight + unrecorded + 2,
        "{sent_again} lines sent again, more than the {in_flight} in flight and {unrecorded} unrecorded at the kill"
    );
    assert!(sent_again < (before as u64) / 2, "the chunk restarted from zero: {sent_again} sent again");
    assert!(
        second.logs().iter().any(|l| l.contains("resuming a chunk from its checkpoint")),
        "{}",
        second.logs().join("\n")
    );
}

/// `serve` frozen (SIGSTOP) again and again for longer than its 300 ms leases: when it wakes,
/// its claimer may take back its own chunk before its heartbeat learns the lease lapsed. The old
/// holder must then be told it lost the chunk and its end must not unregister the new holder
/// (which once left the new holder without heartbeats, its lease lapsing in turn: a livelock
/// that sent the batch's lines over and over and never finished).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_paused_past_its_leases_takes_its_own_chunk_back_and_finishes() {
    let sim = sim(SimConfig { max_num_seqs: 16, base_latency_ms: 300, ..SimConfig::default() }).await;
    let app = serve(&sim, &["--lease", "300ms"]);
    let c = &app.client;
    let n = 300;
    let id = c.submit(&chat_lines(n)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..12 {
        app.proc.signal("STOP");
        tokio::time::sleep(Duration::from_millis(350 + 50 * (i % 3))).await;
        app.proc.signal("CONT");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let done = c.wait_terminal(&id, 2 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert_eq!(out.len(), n);
    let logs = app.proc.logs();
    let count = |s: &str| logs.iter().filter(|l| l.contains(s)).count();
    let received = sim.stats().requests_received;
    eprintln!(
        "leases lost {}, resumed {}, upstream requests {received}",
        count("lease lost"),
        count("resuming a chunk")
    );
    assert!(received < 2 * n as u64, "lines were sent over and over: {received} requests for {n} lines");
}
