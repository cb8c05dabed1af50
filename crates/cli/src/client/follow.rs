//! Following a batch to its end (`submit --wait`, `batches wait`): polls it under a live bar,
//! rides out a restarting server, turns Ctrl-C into "cancel the batch?" (or, without a terminal
//! to ask on, into stopping), then downloads its files and prints the outcome.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use vllm_batch_core::BatchStatus;

use super::http::{is_transient, segment, Api};
use super::progress::Ui;
use super::render;
use super::results;
use super::transfer;
use super::wire::{view, Batch};

/// How long polling keeps trying through transient errors (server restarting, 5xx, 429).
const RIDE_OUT: Duration = Duration::from_secs(120);
/// The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
pub const INTERRUPTED: i32 = 130;

/// Where the batch's files go.
pub struct Targets {
    pub output: PathBuf,
    pub errors: PathBuf,
    /// Write the output lines to `output` while following, as they are produced
    /// (`submit --wait --stream-output`), instead of downloading the output file at the end.
    pub stream_output: bool,
}

/// How following ended.
enum Followed {
    /// The batch reached a terminal status: its last object.
    Ended(Value),
    /// The user stopped following: the batch's last object as seen.
    Detached(Value),
}

/// Follows the batch (`batch`: its object as last fetched) until it ends, downloads its files
/// to `targets`, prints the outcome (the final Batch object with `--json`) and returns the exit
/// code: 0 completed, 1 failed, 3 expired, 4 cancelled, 130 stopped by Ctrl-C.
pub async fn follow_and_download(api: &Api, batch: Value, targets: &Targets, poll: Duration, ui: &Ui) -> Result<i32> {
    let mut interrupts = Interrupts::new()?;
    let poll = poll.max(Duration::from_millis(100));
    let (followed, streamed) = if targets.stream_output {
        follow_streaming(api, batch, &targets.output, poll, ui, &mut interrupts).await?
    } else {
        (follow(api, batch, poll, ui, &mut interrupts).await?, None)
    };
    match followed {
        Followed::Ended(raw) => finish(api, raw, targets, streamed, ui, &mut interrupts).await,
        Followed::Detached(raw) => {
            detached(&raw, ui)?;
            if targets.stream_output {
                eprintln!(
                    "  resume its output:  vllm-batch batches results {} --follow -o {}",
                    view::<Batch>(&raw, "batch")?.id,
                    targets.output.display()
                );
            }
            Ok(INTERRUPTED)
        }
    }
}

/// `follow` while the output lines are appended to `output` as they come. Returns how following
/// ended and, when the batch ended and every output line is in, the file's length; a stream
/// that failed is reported, and the output file is then downloaded as usual.
async fn follow_streaming(
    api: &Api,
    batch: Value,
    output: &std::path::Path,
    poll: Duration,
    ui: &Ui,
    interrupts: &mut Interrupts,
) -> Result<(Followed, Option<u64>)> {
    let id = view::<Batch>(&batch, "batch")?.id;
    let streaming = results::stream(api, &id, results::Kind::Output, Some(output), true);
    tokio::pin!(streaming);
    let mut streamed = None;
    let followed = {
        let following = follow(api, batch, poll, ui, interrupts);
        tokio::pin!(following);
        loop {
            tokio::select! {
                f = &mut following => break f?,
                s = &mut streaming, if streamed.is_none() => streamed = Some(s),
            }
        }
    };
    if !matches!(followed, Followed::Ended(_)) {
        return Ok((followed, None));
    }
    let streamed = match streamed {
        Some(s) => s,
        None => streaming.await,
    };
    match streamed {
        Ok(results::Streamed::Complete(bytes)) => Ok((followed, Some(bytes))),
        Ok(results::Streamed::SoFar) => Ok((followed, None)),
        Err(e) => {
            eprintln!("Streaming the output failed ({e:#}); downloading the output file instead.");
            let _ = std::fs::remove_file(results::cursor_path(output));
            Ok((followed, None))
        }
    }
}

async fn follow(api: &Api, mut raw: Value, poll: Duration, ui: &Ui, interrupts: &mut Interrupts) -> Result<Followed> {
    let mut bar = ui.batch_bar();
    let mut cancel_sent = false;
    let mut failing_since: Option<Instant> = None;
    let mut trouble: Option<String> = None;
    loop {
        let batch: Batch = view(&raw, "batch")?;
        bar.update(&batch);
        if let Some(t) = &trouble {
            bar.warn(format!("{}  (retrying: {t})", batch.status));
        }
        if batch.is_terminal() {
            bar.stop();
            return Ok(Followed::Ended(raw));
        }
        let path = format!("/batches/{}", segment(&batch.id));
        tokio::select! {
            next = async { tokio::time::sleep(poll).await; api.get(&path, &[]).await } => match next {
                Ok(v) => {
                    raw = v;
                    failing_since = None;
                    trouble = None;
                }
                Err(e) if is_transient(&e) && failing_since.get_or_insert_with(Instant::now).elapsed() < RIDE_OUT => {
                    trouble = Some(e.to_string());
                }
                Err(e) => {
                    bar.stop();
                    return Err(e.context(format!("following batch {}", batch.id)));
                }
            },
            _ = interrupts.recv() => {
                bar.interrupted();
                if cancel_sent || !ui.can_ask || !ask_cancel(&batch.id, interrupts).await {
                    return Ok(Followed::Detached(raw));
                }
                cancel_sent = true;
                match api.post(&format!("{path}/cancel"), &json!({})).await {
                    Ok(v) => {
                        raw = v;
                        eprintln!("Cancelling {}: in-flight requests finish first (Ctrl-C to stop waiting).", batch.id);
                    }
                    Err(e) => eprintln!("Could not cancel {}: {e}", batch.id),
                }
                bar = ui.batch_bar();
            }
        }
    }
}

/// Asks on the terminal whether to cancel the batch; a second Ctrl-C means no.
async fn ask_cancel(id: &str, interrupts: &mut Interrupts) -> bool {
    eprint!("Cancel batch {id}? [y/N] (N: stop following, the batch goes on) ");
    let _ = std::io::stderr().flush();
    // A blocking read: if a second Ctrl-C wins, the thread stays blocked, which is why callers
    // end the process with `std::process::exit` rather than by returning from `main`.
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    });
    tokio::select! {
        answer = answer => matches!(answer, Ok(Ok(a)) if matches!(a.trim().to_ascii_lowercase().as_str(), "y" | "yes")),
        _ = interrupts.recv() => {
            eprintln!();
            false
        }
    }
}

/// Prints where following stopped and how to go on: the batch id (or object) on stdout, the
/// commands on stderr.
fn detached(raw: &Value, ui: &Ui) -> Result<()> {
    let b: Batch = view(raw, "batch")?;
    let c = b.request_counts;
    eprintln!(
        "Stopped following {id} ({}, {}/{} done); it goes on on the server.\n  \
         follow it:  vllm-batch batches wait {id}\n  \
         cancel it:  vllm-batch batches cancel {id}",
        b.status,
        c.done(),
        c.total,
        id = b.id,
    );
    if ui.json {
        println!("{}", serde_json::to_string_pretty(raw)?);
    } else {
        println!("{}", b.id);
    }
    Ok(())
}

/// Downloads the ended batch's files and prints the outcome.
/// `streamed`: the output lines are already in `targets.output` (this many bytes).
async fn finish(
    api: &Api,
    raw: Value,
    targets: &Targets,
    streamed: Option<u64>,
    ui: &Ui,
    interrupts: &mut Interrupts,
) -> Result<i32> {
    let b: Batch = view(&raw, "batch")?;
    let mut written = Vec::new();
    if let Some(bytes) = streamed {
        if b.output_file_id.is_some() {
            written.push(("output", &targets.output, bytes));
        } else {
            // No output file: none on disk either, as without streaming.
            let _ = std::fs::remove_file(&targets.output);
        }
    }
    for (label, id, dest) in
        [("output", &b.output_file_id, &targets.output), ("errors", &b.error_file_id, &targets.errors)]
    {
        let Some(id) = id else { continue };
        if label == "output" && streamed.is_some() {
            continue;
        }
        let bytes = tokio::select! {
            n = transfer::download_to_path(api, id, dest, ui) => n.with_context(|| format!("saving the {label} file of {}", b.id))?,
            _ = interrupts.recv() => {
                let _ = std::fs::remove_file(transfer::part_path(dest));
                eprintln!("\nInterrupted; get the file later with: vllm-batch files download {id} -o {}", dest.display());
                return Ok(INTERRUPTED);
            }
        };
        written.push((label, dest, bytes));
    }
    if ui.json {
        println!("{}", serde_json::to_string_pretty(&raw)?);
    } else {
        println!("{}", render::batch_summary(&b));
        print!("{}", render::validation_errors(&b));
        for (label, path, bytes) in written {
            println!("  {label:<6}  {} ({})", path.display(), render::size(bytes));
        }
    }
    Ok(exit_code(&b))
}

fn exit_code(b: &Batch) -> i32 {
    match b.status() {
        Some(BatchStatus::Completed) => 0,
        Some(BatchStatus::Expired) => 3,
        Some(BatchStatus::Cancelled) => 4,
        _ => 1,
    }
}

/// Ctrl-C as a stream, registered once: a press during a poll request is not lost. (Once
/// registered, SIGINT no longer ends the process, so every wait of the follower listens.)
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> Result<Interrupts> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("listening for Ctrl-C")?;
            Ok(Interrupts { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupts {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
