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

step "cargo test --workspace"
cargo test --workspace
