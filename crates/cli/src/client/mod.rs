//! The client commands of `vllm-batch` (`submit`, `batches`, `files`): a small HTTP client of the
//! OpenAI Files and Batches API, configured like the OpenAI SDK (`OPENAI_BASE_URL`,
//! `OPENAI_API_KEY`). On a terminal they show progress bars and human output; `--json` (or
//! output that is not a terminal) prints only the result, for scripts.

mod batches;
mod files;
mod follow;
mod http;
mod progress;
mod render;
mod results;
mod submit;
mod transfer;
mod wire;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

/// Exit codes of the commands that follow a batch (`submit --wait`, `batches wait`).
const EXIT_CODES: &str = "\
Exit status:
  0    success: the batch was created (without --wait) or completed (with --wait)
  1    the batch failed (e.g. an invalid input file), or an API, network or file error
  2    usage error (bad flags)
  3    the batch expired (its completion window passed); its files are downloaded
  4    the batch was cancelled; its files are downloaded
  130  interrupted (Ctrl-C) and stopped following: the batch goes on on the server";

/// Where the API is and how to authenticate, read like the OpenAI SDK reads them.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Base URL of the API, `/v1` included (like the OpenAI SDK's `base_url`).
    #[arg(long, env = "OPENAI_BASE_URL", default_value = "http://127.0.0.1:8080/v1", help_heading = "Connection")]
    pub base_url: String,
    /// API key, sent as `Authorization: Bearer <key>` (optional).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true, help_heading = "Connection")]
    pub api_key: Option<String>,
    /// Print the API's JSON objects, nothing else (no progress bars, no prompts on stdout).
    #[arg(long)]
    pub json: bool,
}

/// `vllm-batch submit`.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct SubmitArgs {
    /// Batch input: a JSONL file, one request per line (uploaded streaming, with purpose `batch`).
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Endpoint that every request of the file targets, e.g. `/v1/chat/completions`.
    #[arg(long, value_name = "PATH")]
    pub endpoint: String,
    /// Time the batch may take: `24h`, or a whole number of seconds, minutes, hours or days
    /// (`90m`, `7d`).
    #[arg(long, value_name = "WINDOW", default_value = "24h")]
    pub completion_window: String,
    /// A metadata pair stored with the batch; repeat it for more (at most 16).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// Follow the batch until it ends, then download its output and error files.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: where the output file (the successful requests) goes
    /// [default: `<input stem>.output.jsonl` next to the input].
    #[arg(long, short = 'o', value_name = "PATH", requires = "wait")]
    pub output: Option<PathBuf>,
    /// With --wait: where the error file (the failed requests) goes, when the batch has one
    /// [default: `<input stem>.errors.jsonl` next to the input].
    #[arg(long, value_name = "PATH", requires = "wait")]
    pub errors: Option<PathBuf>,
    /// With --wait: write the output lines to the output file as they are produced, while
    /// following (resumable: `OUTPUT.cursor` records how far it got; see `batches results`).
    #[arg(long, requires = "wait")]
    pub stream_output: bool,
    /// How often the batch is polled while following.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub poll_interval: Duration,
    /// Sent as the `Idempotency-Key` of the upload (`KEY-file`) and of the create (`KEY-batch`):
    /// running the same submit again with the same key within 24 hours gives the batch it
    /// created instead of a second one [default: a new key per run, which makes this run's own
    /// retries safe].
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `vllm-batch batches …`.
#[derive(Subcommand, Debug)]
pub enum BatchesCommand {
    /// Lists batches, newest first.
    List {
        /// Batches per page (1–100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Start after this batch id (the `last_id` of the previous page).
        #[arg(long, value_name = "BATCH_ID")]
        after: Option<String>,
        /// Follow the pagination to the end and list every batch.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Shows one batch: status, counts, files, usage.
    Get {
        /// The batch's id (`batch_…`).
        #[arg(value_name = "BATCH_ID")]
        id: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Cancels a batch: it is `cancelling` until its in-flight requests finish, then `cancelled`.
    Cancel {
        /// The batch's id (`batch_…`).
        #[arg(value_name = "BATCH_ID")]
        id: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Retries the lines of an ended batch that did not succeed (`upstream_error`,
    /// `batch_expired`, `batch_cancelled`) as a new batch with `metadata.retry_of`; prints its id.
    #[command(after_help = EXIT_CODES)]
    Retry {
        /// The ended batch's id (`batch_…`).
        #[arg(value_name = "BATCH_ID")]
        id: String,
        /// Also retry the lines that ended `invalid_request` (the upstream's final 4xx).
        #[arg(long)]
        include_invalid_requests: bool,
        /// Follow the new batch until it ends and download its files, like `batches wait`.
        #[arg(long)]
        wait: bool,
        /// With --wait: where the output file goes [default: `<new batch id>.output.jsonl`].
        #[arg(long, short = 'o', value_name = "PATH", requires = "wait")]
        output: Option<PathBuf>,
        /// With --wait: where the error file goes [default: `<new batch id>.errors.jsonl`].
        #[arg(long, value_name = "PATH", requires = "wait")]
        errors: Option<PathBuf>,
        /// How often the batch is polled while following.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
        poll_interval: Duration,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Writes the output lines (or, with --errors, the error lines) a batch has so far, while
    /// it runs; with --follow, keeps appending them as they come until the batch ends.
    ///
    /// With -o the lines are appended to FILE and the position is kept in `FILE.cursor`: run
    /// the same command again after a stop to resume, losing and repeating nothing (FILE is
    /// started anew when it has no cursor). Once the batch has ended and every line is in, FILE
    /// equals its output (error) file and `FILE.cursor` is removed.
    Results {
        /// The batch's id (`batch_…`).
        #[arg(value_name = "BATCH_ID")]
        id: String,
        /// The error lines instead of the output lines.
        #[arg(long)]
        errors: bool,
        /// Keep following until the batch has ended and every line is in.
        #[arg(long)]
        follow: bool,
        /// Append to this file (resumable) instead of writing to stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Follows a batch until it ends and downloads its files, like `submit --wait`.
    #[command(after_help = EXIT_CODES)]
    Wait {
        /// The batch's id (`batch_…`).
        #[arg(value_name = "BATCH_ID")]
        id: String,
        /// Where the output file (the successful requests) goes [default: `<batch id>.output.jsonl`].
        #[arg(long, short = 'o', value_name = "PATH")]
        output: Option<PathBuf>,
        /// Where the error file (the failed requests) goes, when the batch has one
        /// [default: `<batch id>.errors.jsonl`].
        #[arg(long, value_name = "PATH")]
        errors: Option<PathBuf>,
        /// How often the batch is polled.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
        poll_interval: Duration,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// `vllm-batch files …`.
#[derive(Subcommand, Debug)]
pub enum FilesCommand {
    /// Lists files, newest first.
    List {
        /// Only files of this purpose (`batch`, `batch_output`, …).
        #[arg(long)]
        purpose: Option<String>,
        /// Most files listed (1–10000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: Option<u32>,
        /// Start after this file id.
        #[arg(long, value_name = "FILE_ID")]
        after: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Shows one file's metadata.
    Get {
        /// The file's id (`file-…`).
        #[arg(value_name = "FILE_ID")]
        id: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Downloads a file's content, to PATH or to stdout.
    Download {
        /// The file's id (`file-…`).
        #[arg(value_name = "FILE_ID")]
        id: String,
        /// Where to write it (`-` or absent: stdout).
        #[arg(long, short = 'o', value_name = "PATH")]
        output: Option<PathBuf>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Deletes a file.
    Delete {
        /// The file's id (`file-…`).
        #[arg(value_name = "FILE_ID")]
        id: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Runs `vllm-batch submit`.
pub async fn submit(args: SubmitArgs) -> Result<()> {
    exit_with(submit::run(args).await)
}

/// Runs `vllm-batch batches …`.
pub async fn batches(cmd: BatchesCommand) -> Result<()> {
    exit_with(batches::run(cmd).await)
}

/// Runs `vllm-batch files …`.
pub async fn files(cmd: FilesCommand) -> Result<()> {
    exit_with(files::run(cmd).await.map(|()| 0))
}

/// Ends the process with the command's exit code when it is not 0. Errors are printed here, on
/// one line (`Error: what: why`), with exit code 1: a client's user wants the server's message,
/// not `main`'s debug rendering (which adds a backtrace when `RUST_BACKTRACE` is set).
fn exit_with(outcome: Result<i32>) -> Result<()> {
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    };
    if code != 0 {
        let _ = std::io::stdout().flush();
        // Not a return through `main`: the runtime would wait for a prompt's blocked stdin read.
        std::process::exit(code);
    }
    Ok(())
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 2s)"))
}
