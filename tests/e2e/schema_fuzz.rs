//! Property-based fuzzing of the live server against its own `/openapi.json` with
//! [schemathesis](https://schemathesis.readthedocs.io) (pinned in `tests/sdk/requirements.txt`,
//! installed into `.venv-test` by `tests/run.sh`). Every operation gets generated requests, valid
//! and invalid; every answer must be no 5xx, have a status code, media type, headers and body the
//! document declares, reject what the schema forbids, and keep created objects readable and
//! deleted ones gone. The server is fresh, with one finished batch whose ids the fuzzer may use,
//! so reads by id reach real objects too; `tests/schemathesis/schemathesis.toml` binds those ids
//! and a dictionary of edge values (multi-byte characters, 64-bit bounds) to the parameters.
//!
//! Bounded and repeatable: a fixed seed, 50 examples per operation, one worker, no example
//! database; about 15 s on two cores. Without the venv the test fails, never skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::*;

/// The checks run on every answer. Left out: `positive_data_acceptance`, which counts any 400 to
/// a schema-valid request as a failure, yet the document cannot express every rule the server
/// keeps (a float such as `3600.0` where an integer is declared, multipart part names with
/// control characters); and the auth checks (`ignored_auth`, `missing_required_header`), since a
/// server without keys answers loopback clients without one on purpose.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,negative_data_rejection,\
                      use_after_free,ensure_resource_availability,unsupported_method";

/// Seed of the generated data: the same requests every run.
const SEED: &str = "20261126";

/// Examples per operation and phase.
const MAX_EXAMPLES: &str = "50";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `schemathesis` command of the test venv, or a panic that says how to get it.
async fn schemathesis() -> PathBuf {
    let python = test_python();
    let hint = "run `tests/run.sh` (it creates .venv-test with tests/sdk/requirements.txt, which pins \
                schemathesis), or `.venv-test/bin/pip install -r tests/sdk/requirements.txt`";
    assert!(python.exists(), "no Python for the schema fuzz test at {}; {hint}", python.display());
    // The console script sits beside the interpreter of its venv (not resolved: the venv's
    // `python` is a symlink to the base interpreter).
    let command = python.with_file_name("schemathesis");
    assert!(command.exists(), "schemathesis is not installed beside {} ; {hint}", python.display());
    let version = Command::new(&command)
        .arg("--version")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} does not run: {e}; {hint}", command.display()));
    assert!(
        version.status.success(),
        "{} --version failed: {}; {hint}",
        command.display(),
        String::from_utf8_lossy(&version.stderr)
    );
    command
}

/// The committed configuration with the dictionaries of known ids appended.
fn config_with_ids(file_ids: &[&str], spare_file_ids: &[&str], batch_ids: &[&str]) -> String {
    let committed = std::fs::read_to_string(repo_root().join("tests/schemathesis/schemathesis.toml"))
        .expect("tests/schemathesis/schemathesis.toml is readable");
    let list = |ids: &[&str]| serde_json::to_string(ids).unwrap();
    format!(
        "{committed}\n# Appended by tests/e2e/schema_fuzz.rs: ids on the server under test.\n\
         [dictionaries.file_ids]\nvalues = {}\n\n\
         [dictionaries.spare_file_ids]\nvalues = {}\n\n\
         [dictionaries.batch_ids]\nvalues = {}\n",
        list(file_ids),
        list(spare_file_ids),
        list(batch_ids)
    )
}

/// `Selected: N/M` and `Tested: K` from the summary, as (N, M, K).
fn operation_counts(output: &str) -> Option<(u32, u32, u32)> {
    let after = |label: &str| output.lines().find_map(|l| l.trim().strip_prefix(label).map(str::trim));
    let (selected, total) = after("Selected:")?.split_once('/')?;
    Some((selected.parse().ok()?, total.parse().ok()?, after("Tested:")?.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_conformance_failures() {
    let schemathesis = schemathesis().await;
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;

    // Objects for the fuzzer to reach: a batch input file, a finished batch and its output file,
    // and a spare file for DELETE.
    let input = c.upload(&chat_lines(3)).await;
    let spare = c.upload(&chat_lines(1)).await;
    let batch = c.create_batch(&input, "/v1/chat/completions", "24h").await["id"].as_str().unwrap().to_string();
    let done = c.wait_terminal(&batch, MINUTE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let output = done["output_file_id"].as_str().unwrap().to_string();

    // Run in a scratch folder: schemathesis and hypothesis write state into the working directory.
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("schemathesis.toml");
    std::fs::write(&config, config_with_ids(&[&input, &output], &[&spare], &[&batch])).unwrap();

    let base = c.base.clone();
    let args: Vec<String> = [
        "--config-file",
        config.to_str().unwrap(),
        "--no-color",
        "run",
        &format!("{base}/openapi.json"),
        "--url",
        &base,
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--wait-for-schema",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    println!("{} {}", schemathesis.display(), args.join(" "));

    let run = Command::new(&schemathesis)
        .args(&args)
        .current_dir(work.path())
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("schemathesis ran past 5 minutes")
        .expect("schemathesis starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let logs = || app.proc.logs().iter().rev().take(60).rev().cloned().collect::<Vec<_>>().join("\n");
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n\
         --- server logs (last 60) ---\n{}",
        out.status,
        logs()
    );
    // Exit 0 with nothing tested would prove nothing: every operation was selected and tested.
    let counts = operation_counts(&stdout);
    assert!(
        counts.is_some_and(|(selected, total, tested)| selected > 0 && selected == total && tested == total),
        "not every operation was tested ({counts:?}):\n{stdout}"
    );
    // A panicking handler closes the connection (a network error above); say so if one slipped by.
    let panics: Vec<_> = app.proc.logs().into_iter().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "the server panicked:\n{}", panics.join("\n"));
}
