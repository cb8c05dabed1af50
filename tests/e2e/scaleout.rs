//! Scale-out with real processes on a real PostgreSQL: several workers and API replicas on one
//! database with rolling restarts, workers killed at random, a long batch beside a short one,
//! the database stopped under a running worker; and the schema check every `api` and
//! `worker` makes at start. Each test has a database (or a PostgreSQL server) of its own.

use std::time::{Duration, Instant};

use crate::support::*;

const MINUTE: Duration = Duration::from_secs(60);

/// API replicas and workers on one database, with one data folder for their local file bodies
/// (the shared-folder deployment; tests/e2e/s3.rs covers the object store).
struct Fleet {
    url: String,
    dir: tempfile::TempDir,
    upstream: String,
    apis: Vec<Proc>,
    workers: Vec<Proc>,
    started_workers: usize,
}

impl Fleet {
    /// A migrated, empty database at `url`.
    fn new(url: String, sim: &SimHandle) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        migrate(dir.path(), &[("DATABASE_URL", url.as_str())]);
        Fleet { url, dir, upstream: sim.base_url(), apis: Vec::new(), workers: Vec::new(), started_workers: 0 }
    }

    fn env(&self) -> [(&'static str, &str); 1] {
        [("DATABASE_URL", self.url.as_str())]
    }

    fn api(&self) -> Proc {
        Proc::start_with_env("api", self.dir.path(), &["--upstream", &self.upstream], &self.env())
    }

    fn worker(&mut self, extra: &[&str]) -> Proc {
        let upstream = self.upstream.clone();
        self.worker_on(&upstream, extra)
    }

    /// A worker sending to `upstream` instead of the fleet's.
    fn worker_on(&mut self, upstream: &str, extra: &[&str]) -> Proc {
        self.worker_with_env(upstream, extra, &[])
    }

    /// A worker with more environment (e.g. its wall clock shifted).
    fn worker_with_env(&mut self, upstream: &str, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        self.started_workers += 1;
        let id = format!("w{}", self.started_workers);
        let mut args = vec!["--upstream", upstream, "--worker-id", id.as_str()];
        args.extend_from_slice(FAST);
        args.extend_from_slice(extra);
        let mut all: Vec<(&str, &str)> = self.env().to_vec();
        all.extend_from_slice(env);
        Proc::start_with_env("worker", self.dir.path(), &args, &all)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_four_workers_and_two_api_replicas_with_rolling_restarts() {
    let Some(base) = pg_base() else { return };
    let sim = sim(SimConfig { base_latency_ms: 2, ..SimConfig::default() }).await;
    let mut fleet = Fleet::new(fresh_pg_database(&base), &sim);
    fleet.apis = vec![fleet.api(), fleet.api()];
    for _ in 0..4 {
        let w = fleet.worker(&[]);
        fleet.workers.push(w);
    }
    let n = 20_000;
    // Upload through one replica, create and follow through the other.
    let file = fleet.apis[0].client().upload(&chat_lines(n)).await;
    let b = fleet.apis[1].client().create_batch(&file, "/v1/chat/completions", "24h").await;
    let id = b["id"].as_str().unwrap().to_string();

    // Rolling restart while the batch runs: one API replica, then one worker, each stopped with
    // SIGTERM (as systemd does) and started again.
    let c1 = fleet.apis[1].client();
    c1.wait_until(&id, 3 * MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 3_000).await;
    fleet.apis[0].signal("TERM");
    assert_eq!(fleet.apis[0].wait_exit(MINUTE), Some(0), "API replica drains and exits 0");
    fleet.apis[0] = fleet.api();
    let mid = c1.batch(&id).await;
    assert_eq!(mid["status"], "in_progress", "{mid}");
    let first = fleet.workers[0].completed_requests().await;
    fleet.workers[0].signal("TERM");
    assert_eq!(fleet.workers[0].wait_exit(MINUTE), Some(0), "worker drains and exits 0");
    fleet.workers[0] = fleet.worker(&[]);

    let done = fleet.apis[0].client().wait_terminal(&id, 5 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c1.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert!(err.is_empty(), "no errors expected: {:?}", &err[..err.len().min(3)]);

    // Each worker did part of the work: the restarted one before it stopped, the others by the end.
    let mut shares = vec![first];
    for w in &fleet.workers[1..] {
        shares.push(w.completed_requests().await);
    }
    eprintln!("requests completed per worker (w1 before its restart, w2..w4): {shares:?}");
    assert!(shares.iter().all(|&s| s > 0.0), "a worker did nothing: {shares:?}");
    assert!(shares.iter().sum::<f64>() <= n as f64, "{shares:?}");
}

/// Two workers whose wall clocks disagree by 90 s (the hidden test hook
/// `VLLM_BATCH_CLOCK_OFFSET_MS` shifts every reading of one worker's clock): leases are decided
/// on PostgreSQL's clock, so the worker that runs ahead steals nothing. Seen before leases moved
/// to the database's clock: 9,602 upstream requests for 6,000 lines, 8 chunks lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_worker_whose_clock_runs_90_s_ahead_steals_no_lease() {
    let Some(base) = pg_base() else { return };
    let sim = sim(SimConfig { max_num_seqs: 64, base_latency_ms: 100, ..SimConfig::default() }).await;
    let mut fleet = Fleet::new(fresh_pg_database(&base), &sim);
    fleet.apis = vec![fleet.api()];
    let upstream = fleet.upstream.clone();
    let on_time = fleet.worker(&["--chunk-size", "100"]);
    let ahead = fleet.worker_with_env(&upstream, &["--chunk-size", "100"], &[("VLLM_BATCH_CLOCK_OFFSET_MS", "90000")]);
    fleet.workers = vec![on_time, ahead];
    let n = 3_000;
    let c = fleet.apis[0].client();
    let id = c.submit(&chat_lines(n)).await;
    // The second worker's clock does run ahead (its heartbeat gauge is its wall clock).
    let page = reqwest::get(format!("{}/metrics", fleet.workers[1].base.as_ref().unwrap())).await.unwrap();
    let beat = sample(&page.text().await.unwrap(), "vllm_worker_heartbeat_timestamp{worker=\"w2\"}").unwrap();
    let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(beat - real > 80.0, "the worker's clock is not ahead: {beat} vs {real}");
    let done = c.wait_terminal(&id, 5 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert!(err.is_empty(), "no errors expected: {:?}", &err[..err.len().min(3)]);
    let shares = [fleet.workers[0].completed_requests().await, fleet.workers[1].completed_requests().await];
    eprintln!(
        "requests completed (on time, 90 s ahead): {shares:?}; upstream received {}",
        sim.stats().requests_received
    );
    assert!(shares.iter().all(|&s| s > 0.0), "both workers worked: {shares:?}");
    for w in &fleet.workers {
        let lost = w.logs().iter().filter(|l| l.contains("lease lost") || l.contains("chunk not completed")).count();
        assert_eq!(lost, 0, "a chunk changed hands:\n{}", w.logs().join("\n"));
    }
    assert_eq!(sim.stats().requests_received, n as u64, "every line sent exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_chaos_kill_9_random_workers_while_three_batches_run() {
    let Some(base) = pg_base() else { return };
    // About 500 requests a second at most, so the 9,000 requests take longer than the kills.
    let sim = sim(SimConfig { max_num_seqs: 16, base_latency_ms: 30, ..SimConfig::default() }).await;
    let mut fleet = Fleet::new(fresh_pg_database(&base), &sim);
    let flags = ["--chunk-size", "200", "--max-in-flight", "16"];
    for _ in 0..3 {
        let w = fleet.worker(&flags);
        fleet.workers.push(w);
    }
    fleet.apis = vec![fleet.api()];
    let c = fleet.apis[0].client();
    let sizes = [4_000, 3_000, 2_000];
    let mut ids = Vec::new();
    for n in sizes {
        ids.push(c.submit(&chat_lines(n)).await);
    }
    // A small xorshift, seeded from the clock and printed, picks the victims.
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("chaos seed {seed}");
    let mut kills = 0;
    let deadline = Instant::now() + 5 * MINUTE;
    loop {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut open = 0;
        for id in &ids {
            let b = c.batch(id).await;
            if !matches!(b["status"].as_str(), Some("completed" | "failed" | "expired" | "cancelled")) {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "batches did not finish after {kills} kills");
        if kills < 12 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let victim = (seed % fleet.workers.len() as u64) as usize;
            fleet.workers[victim].kill9();
            fleet.workers[victim] = fleet.worker(&flags);
            kills += 1;
        }
    }
    assert!(kills >= 10, "the batches finished after only {kills} kills: make them longer");
    for (id, n) in ids.iter().zip(sizes) {
        let b = c.batch(id).await;
        assert_eq!(b["status"], "completed", "{b}");
        let (out, err) = c.results(&b).await;
        check_exactly_once(&b, &out, &err, n);
        assert!(err.is_empty(), "no errors expected in {id}");
    }
    eprintln!("{kills} workers killed with SIGKILL; 3 batches complete, every custom_id exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_short_batch_overtakes_a_long_one_within_a_few_chunks() {
    let Some(base) = pg_base() else { return };
    // Each worker sends to a sim of its own, and the short batch names a model of its own: the
    // arrival numbers of the sim that ran the short batch tell how many of the long batch's
    // requests its worker sent between the moment the short batch could be claimed and the short
    // batch's last request. A count of requests, not of seconds: a slow or busy machine does not
    // change it.
    const SHORT: &str = "short-model";
    let config = SimConfig { models: vec![MODEL.into(), SHORT.into()], ..SimConfig::default() };
    let sims = [sim(config.clone()).await, sim(config).await];
    let mut fleet = Fleet::new(fresh_pg_database(&base), &sims[0]);
    let (chunk, limit) = (500u64, 128u64);
    for s in &sims {
        let flags = ["--chunk-size", "500", "--concurrency", "fixed", "--max-in-flight", "128"];
        let w = fleet.worker_on(&s.base_url(), &flags);
        fleet.workers.push(w);
    }
    fleet.apis = vec![fleet.api()];
    let c = fleet.apis[0].client();
    let big = c.submit(&chat_lines(50_000)).await;
    c.wait_until(&big, MINUTE, |b| b["request_counts"]["completed"].as_u64().unwrap() >= 2 * chunk).await;
    let small = c.submit(&chat_lines_for(SHORT, 100, |_| String::new())).await;
    let started = Instant::now();
    // Its chunk is claimable once it is in progress (validation writes both together); polled
    // closely, since requests the long batch sends before the snapshot go uncounted.
    let claimable = loop {
        let b = c.batch(&small).await;
        if b["status"] != "validating" {
            break b;
        }
        assert!(started.elapsed() < MINUTE, "the short batch was never validated: {b}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let at_claimable = [sims[0].stats(), sims[1].stats()];
    let done = c.wait_terminal(&small, MINUTE).await;
    let took = started.elapsed();
    let after = c.batch(&big).await;
    assert_eq!(claimable["status"], "in_progress", "{claimable}");
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, 100);
    assert_eq!(after["status"], "in_progress", "the long batch is still running: {after}");

    // The one chunk of the short batch went to one worker, hence to one sim.
    let (ran, short) = sims.iter().map(|s| s.stats().model(SHORT)).enumerate().find(|(_, m)| m.requests > 0).unwrap();
    assert_eq!(short.requests, 100, "{short:?}");
    let (before, sent_before) = (at_claimable[ran].requests_received, at_claimable[ran].model(SHORT).requests);
    // Arrivals after the snapshot up to the short batch's last, less the short batch's own.
    let long_between = short.last_arrival.saturating_sub(before + (100 - sent_before));
    eprintln!(
        "between the short batch becoming claimable and its last request, its worker sent {long_between} of the \
         long batch's requests ({:.2} chunks); the short batch was complete {took:?} after it was created",
        long_between as f64 / chunk as f64
    );
    // A worker queues the lines of the chunks it holds for its in-flight slots in order, and
    // claims another chunk only once fewer than `limit` of them wait. So when the short batch
    // becomes claimable its worker has at most `chunk + limit - 1` lines waiting; it claims
    // again (the short batch's chunk: the fair rotation puts the batch claimed longest ago
    // first) once fewer than `limit` wait, and those go before the short batch's lines: at most
    // `chunk + limit - 1` = 627 sent first. Requests on their way over the worker's many
    // connections can overtake one another; and on a starved machine (CI's two cores beside an
    // S3 upload test) the other worker can miss a heartbeat of its 2 s lease, so that this one
    // takes over one more chunk of the long batch. The bound allows three chunks (the long batch
    // has 100). Seen here: 0 to 609 in 30 runs, idle or beside two busy loops; 1003 once in CI.
    let (queued, bound) = (chunk + limit - 1, 3 * chunk);
    assert!(
        long_between <= bound,
        "{long_between} of the long batch's requests went first (at most {queued} queued; bound {bound})"
    );

    // Cancelling the long batch keeps its completed results and accounts for every line.
    let a = c.post(&format!("/v1/batches/{big}/cancel"), serde_json::json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let cancelled = c.wait_terminal(&big, 2 * MINUTE).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let (out, err) = c.results(&cancelled).await;
    let codes = check_exactly_once(&cancelled, &out, &err, 50_000);
    assert!(codes.get("batch_cancelled").copied().unwrap_or(0) > 0, "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_worker_cut_off_from_the_database_for_20_s_resumes_without_losing_results() {
    if pg_base().is_none() {
        return;
    }
    let pg = PgServer::start();
    let url = format!("{}/postgres", pg.base());
    let sim = sim(SimConfig { max_num_seqs: 32, base_latency_ms: 40, ..SimConfig::default() }).await;
    let mut fleet = Fleet::new(url, &sim);
    fleet.apis = vec![fleet.api()];
    let w = fleet.worker(&["--chunk-size", "200", "--max-in-flight", "32"]);
    fleet.workers.push(w);
    let c = fleet.apis[0].client();
    let n = 3_000;
    let id = c.submit(&chat_lines(n)).await;
    c.wait_until(&id, MINUTE, |b| b["request_counts"]["completed"].as_i64().unwrap() >= 300).await;
    pg.down();
    let cut = Instant::now();
    // While the database is down the API answers readiness with 503 and the worker keeps going.
    let ready = c.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    assert!(fleet.workers[0].child.try_wait().unwrap().is_none(), "the worker survived the outage");
    pg.up();
    let done = c.wait_terminal(&id, 3 * MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (out, err) = c.results(&done).await;
    check_exactly_once(&done, &out, &err, n);
    assert!(err.is_empty(), "no errors expected");
    let logs = fleet.workers[0].logs().join("\n");
    assert!(logs.contains("failed; retrying"), "the worker saw the outage and retried:\n{logs}");
    assert_eq!(c.get("/ready").await.status, 200);
}

/// `api` and `worker` refuse a database whose schema is behind, naming the command that fixes it.
#[test]
fn api_and_worker_refuse_a_schema_that_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["api", "worker"] {
        let mut command = std::process::Command::new(BIN);
        use_test_database(&mut command, dir.path());
        let port = if cmd == "api" { "--port" } else { "--metrics-port" };
        let out =
            command.args([cmd, port, "0", "--data-dir"]).arg(dir.path()).env("RUST_BACKTRACE", "0").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(stderr.contains("the database schema is behind this build"), "{cmd}: {stderr}");
        assert!(stderr.contains(" 1 (init)") && stderr.contains("not applied"), "{cmd}: {stderr}");
        assert!(stderr.contains("Run `vllm-batch migrate`"), "{cmd}: {stderr}");
    }
    migrate(dir.path(), &[]);
    let api = Proc::start("api", dir.path(), &[]);
    drop(api);
}
