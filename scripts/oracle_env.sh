#!/usr/bin/env bash
# Create or update the dev-only Python environment used by scripts/make_fixtures.py and
# scripts/bench_peers.sh (see /work/shared/oracle/README.md). Idempotent: re-running only
# installs what is missing. Nothing here is needed by the Rust tests.
#
#   scripts/oracle_env.sh            # numpy, onnx, onnxruntime, safetensors, threadpoolctl + torch
#   NO_TORCH=1 scripts/oracle_env.sh # skip the large torch download
#   VENV=/some/dir scripts/oracle_env.sh
set -euo pipefail
VENV=${VENV:-$HOME/.cache/resnetc-oracle}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --disable-pip-version-check -q)
"${PIP[@]}" numpy onnx onnxruntime safetensors threadpoolctl
if [ -z "${NO_TORCH:-}" ]; then
    # Default PyPI wheel (includes CUDA libraries, large; runs on CPU). The CPU-only index
    # is not reachable from the build machines.
    if ! "$VENV/bin/python" -c 'import torch, torchvision' 2>/dev/null; then
        "${PIP[@]}" torch torchvision
    fi
fi
"$VENV/bin/python" - <<'PY'
import importlib
for m in ["numpy", "onnx", "onnxruntime", "safetensors", "threadpoolctl", "torch", "torchvision"]:
    try:
        mod = importlib.import_module(m)
        print(f"{m:14s} {getattr(mod, '__version__', '?')}")
    except ImportError:
        print(f"{m:14s} MISSING")
PY
echo "venv: $VENV"
