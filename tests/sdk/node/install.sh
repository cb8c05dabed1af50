#!/usr/bin/env bash
# Installs the official `openai` Node package, pinned in package.json and package-lock.json, into
# tests/sdk/node/node_modules for the Node SDK conformance test (openai_flow.mjs, run by
# tests/e2e/sdk.rs). Idempotent: reinstalls with `npm ci` only when node_modules is missing or
# package-lock.json changed since the last successful install. Needs node >= 20 and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

STAMP=node_modules/.package-lock.installed

for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool is missing; install Node.js 20 or later (with npm)" >&2
        exit 1
    fi
done
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "node $(node --version) is too old for the openai package; install Node.js 20 or later" >&2
    exit 1
fi

if [ ! -d node_modules/openai ] || ! cmp -s package-lock.json "$STAMP"; then
    npm ci --no-audit --no-fund
    cp package-lock.json "$STAMP"
fi
node -e 'import("openai/version").then((m) => console.log("openai (node)", m.VERSION))'
