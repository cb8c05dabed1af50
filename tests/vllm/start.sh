#!/usr/bin/env bash
# Starts real vLLM (CPU build, installed by setup.sh) on a loopback port and waits for /health.
# Prints "PORT PID" on success. vLLM runs in a session of its own whose leader is PID (the API
# server; its engine-core process is in the same group): stop both with `tests/vllm/stop.sh PID`
# (or `kill -- -PID`). Environment:
#   VLLM_SERVE           chat (default): SmolLM2-135M-Instruct as smollm2-135m-instruct;
#                        embed: all-MiniLM-L6-v2 as all-minilm-l6-v2 (vLLM's pooling runner)
#   VLLM_PORT            the port (default: a free one)
#   VLLM_MAX_NUM_SEQS    vLLM's --max-num-seqs (default 32)
#   VLLM_LOG             vLLM's log file (default: a temp file; appended to)
#   VLLM_PIDFILE         if set, PID is appended to it (tests/run.sh stops what it lists at exit)
#   VLLM_START_TIMEOUT   seconds to wait for /health (default 600)
#   VLLM_EXTRA_ARGS      more arguments for vLLM's server (split on spaces)
# float32: bfloat16 gives wrong text with this small model on CPU. --enforce-eager: without
# torch.compile vLLM answers /health in ~45 s instead of ~100 s (~180 s before its compile cache
# exists) and runs this model as fast (4.6 requests/s at 32 concurrent chats of 32 tokens, both).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mapfile -t paths < <("$here/setup.sh")
python="${paths[0]}"
case "${VLLM_SERVE:-chat}" in
  chat) serve=(--model "${paths[1]}" --served-model-name smollm2-135m-instruct --max-model-len 1024
               --max-num-seqs "${VLLM_MAX_NUM_SEQS:-32}") ;;
  embed) serve=(--model "${paths[2]}" --served-model-name all-minilm-l6-v2 --runner pooling) ;;
  *) echo "vllm-start: VLLM_SERVE=${VLLM_SERVE}: use chat or embed" >&2; exit 2 ;;
esac
port="${VLLM_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
log="${VLLM_LOG:-$(mktemp -t vllm-XXXXXX.log)}"
read -r -a extra <<< "${VLLM_EXTRA_ARGS:-}"
HF_HUB_OFFLINE=1 VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=2 VLLM_NO_USAGE_STATS=1 \
  setsid "$python" -m vllm.entrypoints.openai.api_server "${serve[@]}" --dtype float32 --enforce-eager \
  --host 127.0.0.1 --port "$port" "${extra[@]}" \
  >> "$log" 2>&1 < /dev/null &
pid=$!
if [ -n "${VLLM_PIDFILE:-}" ]; then echo "$pid" >> "$VLLM_PIDFILE"; fi
deadline=$((SECONDS + ${VLLM_START_TIMEOUT:-600}))
until curl -sf "http://127.0.0.1:$port/health" > /dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "vllm-start: vLLM exited while starting; its log ($log):" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "vllm-start: no /health within ${VLLM_START_TIMEOUT:-600} s; log: $log" >&2
    "$here/stop.sh" "$pid"
    exit 1
  fi
  sleep 1
done
echo "$port $pid"
