//! OpenAI SDK conformance: runs `tests/sdk/openai_flow.py`, which drives the real binary with the
//! official `openai` Python package, unmodified. The interpreter comes from
//! `VLLM_BATCH_TEST_PYTHON` (set by `tests/run.sh`) or the repository's `.venv-test`; without one
//! that can `import openai` the test fails, never skips: run `tests/run.sh` to create it.
//!
//! The same flow with the official `openai` Node package: `tests/sdk/node/openai_flow.mjs`, run by
//! `node` (from `VLLM_BATCH_TEST_NODE` or the PATH) against the package pinned in
//! `tests/sdk/node/package-lock.json` and installed by `tests/sdk/node/install.sh` (which
//! `tests/run.sh` calls). Without node or that install the test fails, never skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `node`, with the `openai` package installed under `tests/sdk/node`, or a panic that says how to
/// get them.
async fn sdk_node() -> PathBuf {
    let node = PathBuf::from(std::env::var_os("VLLM_BATCH_TEST_NODE").unwrap_or_else(|| "node".into()));
    let dir = repo_root().join("tests/sdk/node");
    let hint = "run `tests/run.sh` (it runs tests/sdk/node/install.sh, which installs the pinned `openai` \
                package with `npm ci`), or run `bash tests/sdk/node/install.sh`; Node.js 20 or later is needed";
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .await
        .unwrap_or_else(|e| panic!("`{}` does not run: {e}; {hint}", node.display()));
    assert!(version.status.success(), "`{} --version` failed; {hint}", node.display());
    let package = dir.join("node_modules/openai/package.json");
    assert!(package.exists(), "the `openai` Node package is not installed ({} is missing); {hint}", package.display());
    let probe = Command::new(&node)
        .args(["--input-type=module", "-e", "import { VERSION } from 'openai/version'; console.log(VERSION)"])
        .current_dir(&dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("`{}` does not run: {e}; {hint}", node.display()));
    assert!(
        probe.status.success(),
        "{} (node {}) cannot import openai: {}; {hint}",
        node.display(),
        String::from_utf8_lossy(&version.stdout).trim(),
        String::from_utf8_lossy(&probe.stderr)
    );
    node
}

/// Runs an SDK flow script against a fresh server and simulated vLLM; asserts it exits 0 and ends
/// with "N passed, 0 failed", and shows its output and the server's logs otherwise.
async fn run_flow(program: &Path, script: &Path, extra_env: &[(&str, &str)]) {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);

    let run = Command::new(program)
        .arg(script)
        .current_dir(repo_root())
        .env("OPENAI_BASE_URL", format!("{}/v1", app.client.base))
        .env("OPENAI_API_KEY", "sk-vllm-batch-test")
        .env("SIM_MODEL", MODEL)
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .unwrap_or_else(|_| panic!("{} ran past 10 minutes", script.display()))
        .expect("the SDK script starts");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the SDK flow {} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- server logs (last 50) ---\n{}",
        script.display(),
        out.status,
        app.proc.logs().iter().rev().take(50).rev().cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        stdout.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "no summary line:\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_runs_the_whole_flow() {
    let python = sdk_python().await;
    let script = repo_root().join("tests/sdk/openai_flow.py");
    run_flow(&python, &script, &[("PYTHONUNBUFFERED", "1")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_node_sdk_runs_the_whole_flow() {
    let node = sdk_node().await;
    let script = repo_root().join("tests/sdk/node/openai_flow.mjs");
    run_flow(&node, &script, &[]).await;
}

/// The README's "With the OpenAI Python SDK" example, run as pasted (only its base URL pointed at
/// this test's server) over the README's own `requests.jsonl`, and once more over a file whose
/// every line fails upstream (no output file: the example must not download a null id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_example_runs_as_pasted() {
    let python = sdk_python().await;
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme.split("### With the OpenAI Python SDK").nth(1).expect("the README has the SDK example");
    let example = section.split("```python\n").nth(1).and_then(|s| s.split("```").next()).expect("a python block");
    let requests = readme
        .split("cat > requests.jsonl <<'JSONL'\n")
        .nth(1)
        .and_then(|s| s.split("\nJSONL").next())
        .expect("the curl example's requests.jsonl");
    let sim = default_sim().await;
    let app = serve(&sim, &["--retry-backoff-max", "50ms", "--max-retries", "1"]);
    let script = example.replace("http://127.0.0.1:8080/v1", &app.client.url("/v1"));
    assert_ne!(script, example, "the example names the default base URL");
    let failing: String =
        requests.lines().map(|l| l.replace("\"content\": \"", "\"content\": \"__sim_500__ ") + "\n").collect();
    assert_eq!(failing.matches("__sim_500__").count(), 2, "{failing}");
    for (content, expect) in
        [(format!("{requests}\n"), "\"custom_id\": \"q1\""), (failing, "\"code\": \"upstream_error\"")]
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("requests.jsonl"), content).unwrap();
        std::fs::write(dir.path().join("example.py"), &script).unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            Command::new(&python).arg("example.py").current_dir(dir.path()).stdin(Stdio::null()).output(),
        )
        .await
        .expect("the example finished")
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).replace("\":\"", "\": \"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the example failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("completed"), "{stdout}");
        assert!(stdout.contains(expect), "{expect} in:\n{stdout}");
    }
}
