#!/usr/bin/env bash
# Installs the S3-compatible server that the object-store tests (tests/e2e/s3.rs) run against:
# s3s-fs from crates.io, a real S3 protocol server (SigV4 signatures checked, multipart uploads,
# ranged GETs) that keeps a bucket as a folder. Built once into ~/.cache/vllm-batch/s3s-fs and
# reused by later runs; prints the binary's path as its only line on stdout (progress goes to
# stderr), so callers can do: VLLM_BATCH_TEST_S3_SERVER=$(bash tests/s3/install.sh).
set -euo pipefail

VERSION=0.14.1 # the newest s3s-fs that builds with rustc 1.92+ (0.15 needs 1.96)
ROOT="${VLLM_BATCH_S3S_FS_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-batch/s3s-fs}"
BIN="$ROOT/bin/s3s-fs"

if [ "$("$BIN" --version 2>/dev/null)" != "s3s-fs $VERSION" ]; then
    echo "building s3s-fs $VERSION into $ROOT (once; a few minutes)" >&2
    cargo install s3s-fs --version "=$VERSION" --features binary --locked --root "$ROOT" --force >&2
fi
"$BIN" --version >&2
echo "$BIN"
