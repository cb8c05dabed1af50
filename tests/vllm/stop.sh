#!/usr/bin/env bash
# Stops the vLLM that start.sh started as PID, with its engine-core process (the whole process
# group), and waits until they are gone. Each PID argument is one start; missing ones are skipped.
set -uo pipefail
for pid in "$@"; do
  kill -TERM -- "-$pid" 2>/dev/null || continue
  for _ in $(seq 1 30); do
    pgrep -g "$pid" > /dev/null || break
    sleep 1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
done
exit 0
