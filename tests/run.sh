#!/usr/bin/env bash
# The project's one test command: formatting, lints, and every test (unit, end-to-end, and the
# official OpenAI Python SDK against the real binary). Works on a clean clone that has only the
# Rust toolchain and python3; CI runs it through .ci/run. Safe to run again and again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv-test
REQUIREMENTS=tests/sdk/requirements.txt

step() { printf '\n==> %s\n' "$*"; }

# --- Python for the SDK conformance test -----------------------------------------------------
step "Python venv for the OpenAI SDK test ($VENV)"
if ! command -v python3 >/dev/null; then
    echo "python3 is missing; install it (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; then
        echo "python3's venv module is missing; installing Debian's python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq python3-venv
    else
        echo "python3's venv module is missing; install it: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi
if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
# Reinstall only when the requirements changed since the last successful install.
if ! cmp -s "$REQUIREMENTS" "$VENV/.requirements.installed"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/.requirements.installed"
fi
"$VENV/bin/python" -c 'import openai; print("openai", openai.__version__)'
VLLM_BATCH_TEST_PYTHON="$PWD/$VENV/bin/python"
export VLLM_BATCH_TEST_PYTHON

# --- Node.js: the official openai npm package for the Node SDK conformance test -----------------
step "Node packages for the OpenAI Node SDK test (tests/sdk/node)"
bash tests/sdk/node/install.sh

# --- tmux (the CLI's progress bar is tested on a pseudo-terminal) and headless Chromium -------
step "tmux for the CLI terminal tests"
bash tests/cli/install.sh

step "Chromium and playwright-core for the web page test (tests/browser)"
bash tests/browser/install.sh

# --- An S3-compatible server for the object-store tests (tests/e2e/s3.rs) ---------------------
step "s3s-fs, the S3-compatible server of the object-store tests (tests/s3)"
VLLM_BATCH_TEST_S3_SERVER="$(bash tests/s3/install.sh)"
export VLLM_BATCH_TEST_S3_SERVER

# --- Debian packages for the monitoring checks ------------------------------------------------
# promtool and a real prometheus (Debian's prometheus), and a compose implementation to validate
# docker-compose.monitoring.yml (Debian's docker-compose; no Docker engine is needed for that).
step "Debian packages: prometheus, prometheus-alertmanager, docker-compose"
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        # Keep the packages' init scripts from starting daemons: tests start their own.
        policy=/usr/sbin/policy-rc.d
        created_policy=false
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=true
        fi
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
        if $created_policy; then rm -f "$policy"; fi
    else
        echo "missing: ${missing[*]}; install them: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
promtool --version | head -1

# --- PostgreSQL: the scale-out tests and the second pass of the end-to-end suite -------------
step "PostgreSQL for the scale-out tests (tests/pg/start.sh)"
VLLM_BATCH_TEST_PG=$(bash tests/pg/start.sh)
export VLLM_BATCH_TEST_PG
echo "VLLM_BATCH_TEST_PG=${VLLM_BATCH_TEST_PG/:vllm-batch-test@/:***@}"

# --- Real vLLM for tests/vllm: the CPU build and a real 135M model, cached in ~/.cache/vllm-batch --
# The tests start it themselves (tests/vllm/start.sh) and take turns with it; every vLLM they
# start is listed in VLLM_PIDFILE and stopped when this script exits, however it exits.
step "real vLLM, CPU build, with SmolLM2-135M-Instruct (tests/vllm/setup.sh)"
bash tests/vllm/setup.sh
VLLM_BATCH_TEST_VLLM=1
VLLM_PIDFILE="$(mktemp -t vllm-batch-test-vllm.XXXXXX)"
export VLLM_BATCH_TEST_VLLM VLLM_PIDFILE
trap 'bash tests/vllm/stop.sh $(cat "$VLLM_PIDFILE" 2>/dev/null); rm -f "$VLLM_PIDFILE"' EXIT

# --- Monitoring configuration checks -----------------------------------------------------------
step "monitoring/check.sh (promtool check config/rules, promtool test rules, compose config, promtail)"
bash monitoring/check.sh

step "monitoring/grafana/check_dashboards.py"
python3 monitoring/grafana/check_dashboards.py

# --- Rust ------------------------------------------------------------------------------------
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
        step "rustup component add $component"
        rustup component add "$component"
    fi
done

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace (end-to-end suite on SQLite, scale-out tests on PostgreSQL, real-vLLM tests)"
cargo test --workspace

# The same end-to-end suite again with every process on PostgreSQL (a database per test).
step "end-to-end suite on PostgreSQL (VLLM_BATCH_TEST_BACKEND=postgres)"
VLLM_BATCH_TEST_BACKEND=postgres cargo test -p vllm-batch --test e2e -- --skip scaleout::pg_ --skip s3::pg_

# --- Fuzzing: every cargo-fuzz target for a bounded time over its committed corpus --------------
# The instrumented build is kept outside the checkout so that later runs on this machine reuse it.
step "cargo fuzz (fuzz/run.sh, ${FUZZ_SECONDS:-60} s per target)"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/vllm-batch/fuzz-target}" bash fuzz/run.sh
