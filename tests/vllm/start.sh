#!/usr/bin/env bash
# Starts real vLLM (CPU build, installed by setup.sh) on a free loopback port and waits for
# /health. Prints "PORT PID" on success; the log goes to $VLLM_LOG (default: a temp file).
# Stop it with: kill PID.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mapfile -t paths < <("$here/setup.sh")
python="${paths[0]}"
model="${paths[1]}"
port="${VLLM_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
log="${VLLM_LOG:-$(mktemp -t vllm-XXXXXX.log)}"
max_num_seqs="${VLLM_MAX_NUM_SEQS:-32}"
HF_HUB_OFFLINE=1 VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=2 \
  "$python" -m vllm.entrypoints.openai.api_server --model "$model" \
  --served-model-name smollm2-135m-instruct --dtype float32 --max-model-len 1024 \
  --max-num-seqs "$max_num_seqs" --host 127.0.0.1 --port "$port" > "$log" 2>&1 &
pid=$!
deadline=$((SECONDS + ${VLLM_START_TIMEOUT:-600}))
until curl -sf "http://127.0.0.1:$port/health" > /dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "vllm-start: vLLM exited while starting; its log ($log):" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "vllm-start: no /health within ${VLLM_START_TIMEOUT:-600} s; log: $log" >&2
    kill "$pid"
    exit 1
  fi
  sleep 2
done
echo "$port $pid"
