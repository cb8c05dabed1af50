#!/usr/bin/env bash
# Installs what the browser test of the web status page needs (tests/e2e/web.rs drives
# tests/browser/page_check.mjs): Debian's `chromium`, and `playwright-core` (pinned in
# package.json / package-lock.json) into tests/browser/node_modules. Idempotent: does nothing
# when both are already there. apt runs only as root or in CI; elsewhere it says what to install.
# playwright-core stays at 1.61, the last release that runs on Debian 12's Node.js 18.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v chromium >/dev/null; then
    if [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; then
        echo "installing Debian's chromium"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium
    else
        echo "chromium is missing; install it: sudo apt-get install chromium" >&2
        exit 1
    fi
fi

if ! command -v npm >/dev/null; then
    if [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; then
        echo "installing Debian's nodejs and npm"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends nodejs npm
    else
        echo "node/npm are missing; install them: sudo apt-get install nodejs npm" >&2
        exit 1
    fi
fi

# Reinstall only when the lock file changed since the last successful install.
if ! cmp -s package-lock.json node_modules/.package-lock.installed 2>/dev/null; then
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund
    else
        npm install --no-audit --no-fund
    fi
    cp package-lock.json node_modules/.package-lock.installed
fi
node -e 'console.log("playwright-core", require("playwright-core/package.json").version)'
chromium --version 2>/dev/null
