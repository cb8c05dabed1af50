#!/usr/bin/env bash
# Installs what the client commands' end-to-end tests (tests/e2e/cli.rs) need beyond Rust: tmux,
# which runs `vllm-batch submit` under a pseudo-terminal so the tests can read its progress bar
# and answer its Ctrl-C prompt. Installs only as root or in CI; otherwise says what is missing.
set -euo pipefail

if command -v tmux >/dev/null; then
    tmux -V
    exit 0
fi
if [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends tmux
    tmux -V
else
    echo "tmux is missing; install it: sudo apt-get install tmux" >&2
    exit 1
fi
